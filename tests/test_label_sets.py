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


def test_auc_and_ap_of_a_class_are_over_the_rows_whose_label_is_known():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from cxrprobe.metrics.auc import per_class_auc_ap

    rng = np.random.default_rng(0)
    labels = (rng.random((400, 3)) < 0.3).astype(np.uint8)
    scores = rng.normal(size=(400, 3)) + labels
    known = rng.random((400, 3)) < 0.7
    # an unknown label reads 0; were it scored as a negative, the AUC would move
    aucs, aps = per_class_auc_ap(labels * known, scores, known)
    for c in range(3):
        rows = known[:, c]
        assert aucs[c] == pytest.approx(roc_auc_score(labels[rows, c], scores[rows, c]))
        assert aps[c] == pytest.approx(average_precision_score(labels[rows, c], scores[rows, c]))
    assert not np.allclose(aucs, per_class_auc_ap(labels * known, scores)[0])


def test_test_resamples_score_each_class_over_its_known_rows():
    from cxrprobe.metrics.bootstrap import replicate_mean_aucs

    rng = np.random.default_rng(1)
    labels = (rng.random((300, 2)) < 0.4).astype(np.uint8)
    scores = rng.normal(size=(300, 2)) + labels
    known = rng.random((300, 2)) < 0.6
    weights = rng.integers(0, 3, size=(4, 300)).astype(float)
    masked = replicate_mean_aucs(labels * known, scores, weights, known)
    # a class's rows outside its known set weigh nothing: the same as zero weights there
    per_class = [replicate_mean_aucs(labels[:, [c]] * known[:, [c]], scores[:, [c]], weights * known[:, c])
                 for c in range(2)]
    assert np.allclose(masked, np.mean(per_class, axis=0))


def test_support_sets_draw_normals_by_the_flag_and_negatives_only_where_known():
    from cxrprobe.eval.sampler import draw_support

    rng = np.random.default_rng(2)
    n = 600
    labels = (rng.random((n, 3)) < 0.2).astype(np.uint8)
    known = rng.random((n, 3)) < 0.5
    labels *= known
    normal = rng.random(n) < 0.2  # a column of its own ("No Finding == 1"), not "no positive"
    labels[normal] = 0
    split = np.array(["train"] * n)
    support = draw_support(labels, split, 4, seed=0, known=known, normal=normal, normals=5)
    assert normal[support.rows].sum() >= 5 and support.no_finding == normal[support.rows].sum()
    pos_neg = draw_support(labels, split, 4, seed=0, design="pos-neg", known=known, normal=normal)
    held, held_known = labels[pos_neg.rows], known[pos_neg.rows]
    assert ((held == 1).sum(axis=0) >= 4).all() and (((held == 0) & held_known).sum(axis=0) >= 4).all()


def test_a_grid_on_arrays_names_its_classes_and_scores_over_known_test_labels(tmp_path):
    from cxrprobe import run_fewshot
    from cxrprobe.errors import CacheError
    from cxrprobe.metrics.auc import per_class_auc

    rng = np.random.default_rng(3)
    n, d = 900, 16
    labels = (rng.random((n, 3)) < 0.25).astype(np.uint8)
    X = rng.normal(size=(n, d)) + labels @ rng.normal(size=(3, d))
    split = np.array(["train", "val", "test"])[rng.integers(0, 3, n)]
    patients = np.arange(n).astype(str)
    known = np.ones((n, 3), dtype=bool)
    known[split == "test"] = rng.random(((split == "test").sum(), 3)) < 0.6  # only test labels are unknown
    classes = ("Edema", "Effusion", "Opacity")
    result = run_fewshot(embeddings=X, labels=labels * known, splits=split, patients=patients, known=known,
                         classes=classes, heads=("prototype",), shots=(4,), seeds=2, jobs=1, out=tmp_path / "r")
    runs = result.grid.runs
    assert {r["class"] for r in result.runs} == {*classes, "mean"}
    header = (tmp_path / "r" / "per_class.csv").read_text().splitlines()[0]
    assert header == "head,shots,metric,Edema,Effusion,Opacity"
    # the prototype head's AUC, recomputed over the known test rows only
    from cxrprobe.eval.sampler import draw_support
    from cxrprobe.heads.prototype import PrototypeHead

    support = draw_support(labels * known, split, 4, 0, known=known)
    center = X[split == "train"].mean(axis=0)
    head = PrototypeHead(center=center).fit(X[support.rows], (labels * known)[support.rows])
    test = split == "test"
    expected = per_class_auc(labels[test] * known[test], head.decision_function(X[test]), known[test])
    assert np.allclose(runs[0].aucs, expected)
    # unknown training and validation labels: each finding fits on its known ones; a search,
    # which scores validation sets by AUC over every label, refuses
    unknown = known & (rng.random((n, 3)) < 0.8)
    unknown[labels == 1] = known[labels == 1]
    grid = run_fewshot(embeddings=X, labels=labels * unknown, splits=split, patients=patients, known=unknown,
                       heads=("prototype", "logreg"), shots=(4,), seeds=1, jobs=1)
    normal = ((labels * unknown).sum(axis=1) == 0) & unknown.all(axis=1)  # grid_data's default normal rule
    support = draw_support(labels * unknown, split, 4, 0, known=unknown, normal=normal)
    assert not unknown[support.rows].all()
    head = PrototypeHead(center=center).fit(X[support.rows], (labels * unknown)[support.rows],
                                            known=unknown[support.rows])
    expected = per_class_auc(labels[test] * unknown[test], head.decision_function(X[test]), unknown[test])
    assert np.allclose(grid.grid.runs[0].aucs, expected)
    with pytest.raises(CacheError, match="--search needs a validation set whose labels are all known"):
        run_fewshot(embeddings=X, labels=labels * unknown, splits=split, patients=patients, known=unknown,
                    heads=("logreg",), shots=(4,), seeds=1, jobs=1, search=True)


def test_studies_score_by_max_or_mean_with_labels_positive_anywhere_known_everywhere():
    from cxrprobe.eval.studies import Studies

    study_ids = np.array(["s2", "s1", "s2", "s3", "s1"])
    scores = np.array([[0.1, 5.0], [0.7, 1.0], [0.9, 3.0], [0.2, 0.0], [0.3, 2.0]], dtype=np.float32)
    labels = np.array([[0, 1], [1, 0], [0, 0], [0, 1], [0, 0]], dtype=np.uint8)
    known = np.array([[1, 1], [1, 1], [1, 0], [1, 1], [1, 1]], dtype=bool)
    by_max, by_mean = Studies.of(study_ids, "study-max"), Studies.of(study_ids, "study-mean")
    # studies in sorted order: s1 (rows 1, 4), s2 (rows 0, 2), s3 (row 3)
    np.testing.assert_array_equal(by_max.scores(scores), np.float32([[0.7, 2.0], [0.9, 5.0], [0.2, 0.0]]))
    np.testing.assert_allclose(by_mean.scores(scores), [[0.5, 1.5], [0.5, 4.0], [0.2, 0.0]], rtol=1e-6)
    study_labels, study_known = by_max.labels(labels, known)
    assert study_labels.tolist() == [[1, 0], [0, 0], [0, 1]]  # s2's finding 1 is unknown on one image
    assert study_known.tolist() == [[True, True], [True, False], [True, True]]
    assert by_max.first(np.array(["p1", "p1", "p1", "p2", "p1"])).tolist() == ["p1", "p1", "p2"]
