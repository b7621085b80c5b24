"""The synthetic cache keeps NIH's real structure and is learnable."""

from __future__ import annotations

import numpy as np
import pytest

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.cache.synthetic import SyntheticModel, synthetic_embeddings, write_synthetic_cache
from cxrprobe.data.nih import load_nih_metadata
from cxrprobe.eval.metrics import mean_auc, per_class_auc
from cxrprobe.labels import FINDINGS


@pytest.fixture(scope="module")
def nih(real_nih):
    return load_nih_metadata(real_nih)


def test_cache_has_the_real_rows_and_reads_as_complete(nih, tmp_path):
    table = nih.table.take(np.arange(0, len(nih.table), 50))  # every 50th row keeps the test quick
    out = tmp_path / "synthetic.h5"
    write_synthetic_cache(out, table, nih.label_source, nih.val_fraction, nih.val_seed, SyntheticModel(dim=64))
    with FeatureCache(out) as cache:
        assert (cache.table.image_ids == table.image_ids).all()
        assert (cache.labels == table.labels).all() and (cache.table.split == table.split).all()
        assert cache.embeddings().shape == (len(table), 64)
        prompts, text = cache.text()
        assert text.shape == (len(prompts.prompts), 64)


def test_findings_shift_embeddings_and_prompts_point_their_way(nih):
    table = nih.table.take(np.arange(0, len(nih.table), 10))
    images, text, directions = synthetic_embeddings(table.labels, table.patient_ids, SyntheticModel(dim=128))
    # projecting on the true directions separates positives from negatives
    oracle = per_class_auc(table.labels, images @ directions.T)
    assert np.nanmin(oracle) > 0.6
    assert mean_auc(oracle) > 0.75
    # and the positive prompts alone already rank above chance
    from cxrprobe.models.text import default_prompts

    prompts = default_prompts()
    positive = [prompts.classes.index(name) for name in FINDINGS]
    unit = images / np.linalg.norm(images, axis=1, keepdims=True)
    zero_shot = per_class_auc(table.labels, unit @ (text[positive] / np.linalg.norm(text[positive], axis=1, keepdims=True)).T)
    assert mean_auc(zero_shot) > 0.55


def test_same_seed_same_embeddings(nih):
    table = nih.table.take(np.arange(0, 2000))
    a, _, _ = synthetic_embeddings(table.labels, table.patient_ids, SyntheticModel(dim=32, seed=1))
    b, _, _ = synthetic_embeddings(table.labels, table.patient_ids, SyntheticModel(dim=32, seed=1))
    c, _, _ = synthetic_embeddings(table.labels, table.patient_ids, SyntheticModel(dim=32, seed=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
