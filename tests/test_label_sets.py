"""Label sets: a cache records its classes, known-mask, normal flags and studies, and a cache
of format 1 (NIH, before these) still opens and means what it meant."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.table import ImageTable, concatenate_tables
from cxrprobe.labels import FINDINGS, NIH_LABELS, NORMAL_IF_NO_FINDING, LabelSet


def as_format_1(path, out):
    """``path`` rewritten as cxrprobe wrote caches before format 2: no known-mask, normal
    flags, studies or label-set attributes."""
    shutil.copy(path, out)
    with h5py.File(out, "r+") as f:
        for name in ("known", "normal", "study_id"):
            del f[name]
        for name in ("display_names", "prompt_names", "normal_rule"):
            del f.attrs[name]
        f.attrs["format_version"] = 1
    return out


def test_a_format_1_cache_reads_as_nih_with_every_label_known(synthetic_cache, tmp_path):
    old = as_format_1(synthetic_cache, tmp_path / "v1.h5")
    with FeatureCache(synthetic_cache) as new, FeatureCache(old) as cache:
        assert cache.attrs["format_version"] == 1 and new.attrs["format_version"] == 2
        assert cache.label_set == NIH_LABELS and cache.classes == FINDINGS
        assert cache.known.all() and cache.table.plain
        assert np.array_equal(cache.normal, cache.labels.sum(axis=1) == 0)
        assert np.array_equal(cache.table.study_ids, cache.table.image_ids)
        assert cache.table.fingerprint() == new.table.fingerprint()
        assert cache.summary()["splits"] == new.summary()["splits"]


def test_a_format_2_cache_without_its_known_mask_is_damaged(synthetic_cache, tmp_path, cli):
    broken = tmp_path / "broken.h5"
    shutil.copy(synthetic_cache, broken)
    with h5py.File(broken, "r+") as f:
        del f["known"]
    shown = cli("info", broken)
    assert shown.code == 2 and "no 'known' dataset" in shown.stderr


def chexpert_like(n: int = 6) -> ImageTable:
    labels = LabelSet.from_classes(("Edema", "Pleural_Effusion"), NORMAL_IF_NO_FINDING)
    return ImageTable(
        image_ids=np.array([f"p{i}/s1/view1_frontal.jpg" for i in range(n)]), patient_ids=np.array([f"p{i}" for i in range(n)]),
        split=np.array(["train", "val", "test"] * (n // 3)), labels=np.tile(np.array([[1, 0], [0, 0]], np.uint8), (n // 2, 1)),
        view=np.array(["PA"] * n), known=np.tile(np.array([[True, False], [True, True]]), (n // 2, 1)),
        normal=np.tile(np.array([False, True]), n // 2), study_ids=np.array([f"p{i}/s1" for i in range(n)]), label_set=labels,
    )


def test_any_table_carries_its_label_set_and_masks_through_take_and_concatenate():
    table = chexpert_like()
    assert table.classes == ("Edema", "Pleural_Effusion") and not table.plain
    assert table.label_set.display_names == ("Edema", "Pleural Effusion")
    assert table.label_set.prompt_names == ("edema", "pleural effusion")
    both = concatenate_tables([table.take(np.arange(3)), table.take(np.arange(3, 6))])
    for field in ("labels", "known", "normal", "study_ids", "image_ids"):
        assert np.array_equal(getattr(both, field), getattr(table, field))
    assert both.fingerprint() == table.fingerprint()
    changed = ImageTable(**{**table.__dict__, "known": np.ones((6, 2), bool)})
    assert changed.fingerprint() != table.fingerprint()  # the known-mask is part of what a table means


def test_a_table_refuses_labels_of_another_width_and_a_rule_it_cannot_apply():
    table = chexpert_like()
    with pytest.raises(ValueError, match=r"labels must be \[n, 2\]"):
        ImageTable(**{**table.__dict__, "labels": np.zeros((6, 3), np.uint8), "known": None})
    with pytest.raises(ValueError, match="needs the normal flags"):
        ImageTable(**{**table.__dict__, "normal": None})
    with pytest.raises(ValueError, match="different label sets"):
        concatenate_tables([table, ImageTable(table.image_ids, table.patient_ids, table.split,
                                              np.zeros((6, 14), np.uint8), table.view)])
