"""The synthetic cache keeps NIH's real structure and is learnable."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.cache.synthetic import SyntheticModel, synthetic_embeddings, write_synthetic_cache
from cxrprobe.labels import FINDINGS
from cxrprobe.metrics.auc import mean_auc, per_class_auc


@pytest.fixture(scope="module")
def nih(nih_metadata):
    return nih_metadata


def test_cache_has_the_real_rows_and_reads_as_complete(nih, tmp_path):
    rows = np.arange(0, len(nih.table), 50)  # every 50th row keeps the test quick
    table = nih.table.take(rows)
    out = tmp_path / "synthetic.h5"
    write_synthetic_cache(out, nih, rows, SyntheticModel(dim=64))
    with FeatureCache(out) as cache:
        assert (cache.table.image_ids == table.image_ids).all()
        assert (cache.labels == table.labels).all() and (cache.table.split == table.split).all()
        assert cache.embeddings().shape == (len(table), 64)
        prompts, text = cache.text()
        assert text.shape == (len(prompts.prompts), 64)
        assert cache.summary()["metadata_origin"] == nih.origin


def test_info_says_which_metadata_a_synthetic_cache_came_from(nih, tmp_path, cli):
    for origin, phrase in (("bundled", "the NIH metadata bundled with cxrprobe"), ("data dir", "from the data dir")):
        out = tmp_path / f"{origin}.h5"
        write_synthetic_cache(out, dataclasses.replace(nih, origin=origin), np.arange(0, 2000, 10), SyntheticModel(dim=8))
        shown = cli("info", out)
        assert shown.code == 0 and phrase in " ".join(shown.stdout.split()), shown.stdout


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
