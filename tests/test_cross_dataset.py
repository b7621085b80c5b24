"""Other test labels than the cache's own: a cross-dataset run (support sets from an NIH-layout
cache, the test split of a CheXpert-layout one, on the classes they share) and a cache's NIH
test images scored against Google's radiologist-adjudicated labels (the real 2019 table, from
torchxrayvision's package data)."""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import json

import numpy as np
import pytest
from conftest import TINY
from helpers import assert_one_line_error, snapshot
from test_chexpert import chexpert_folder

from cxrprobe.commands.fewshot import run_fewshot
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.labels import FINDINGS

GOOGLE = importlib.resources.files("torchxrayvision") / "data" / "google2019_nih-chest-xray-labels.csv.gz"
SHARED = {"Consolidation": "Consolidation", "Edema": "Edema", "Pneumonia": "Pneumonia", "Atelectasis": "Atelectasis",
          "Cardiomegaly": "Cardiomegaly", "Pneumothorax": "Pneumothorax", "Pleural Effusion": "Effusion"}


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory):
    """An NIH-layout cache and a CheXpert-layout one, embedded by the same tiny model."""
    root = tmp_path_factory.mktemp("cross")
    write_nih_folder(root / "nih", 80, seed=5, image_size=64)
    with gzip.open(importlib.resources.files("torchxrayvision") / "data" / "chexpert_train.csv.gz", "rt",
                   newline="") as f:
        rows = list(csv.reader(f))
    chexpert_folder(root / "chexpert", rows[0], rows[1:], n_train=40, n_valid=80)
    from cxrprobe.cli import main

    caches = {}
    for name in ("nih", "chexpert"):
        caches[name] = root / f"{name}.h5"
        with pytest.raises(SystemExit) as exited:
            main(["embed", "--data-dir", str(root / name), "--out", str(caches[name]), *TINY, "--quiet"])
        assert exited.value.code in (0, None)
    return caches


def test_support_from_nih_scores_chexpert_s_test_split_on_the_shared_classes(two_caches, tmp_path, cli):
    out = tmp_path / "cross"
    run = cli("fewshot", "--cache", two_caches["nih"], "--test-cache", two_caches["chexpert"], "--shots", "1,2",
              "--seeds", "2", "--heads", "prototype,logreg,zeroshot", "--jobs", "1", "--allow-undefined", "--out", out)
    assert run.code == 0, run.stderr
    config = json.loads((out / "config.json").read_text())
    from cxrprobe.data.chexpert import CLASSES

    assert config["classes"] == [c for c in CLASSES if c in SHARED]  # the test cache's names and order
    assert config["support_classes"] == [f for f in FINDINGS if f in SHARED.values()]  # the support cache's
    scored_by = config["test_set"]["class_map"]["scored_by"]
    assert scored_by == {test: [support] for test, support in SHARED.items() if test in scored_by} and len(scored_by) == 7
    assert set(config["test_set"]["class_map"]["left_out"]) == set(CLASSES) - set(SHARED)
    assert config["test_set"]["test_dataset"] == "chexpert" and config["test_images"] == 80
    assert (out / "per_class.csv").read_text().splitlines()[0] == "head,shots,metric," + ",".join(config["classes"])
    assert "positives_Effusion" in (out / "support_counts.csv").read_text().splitlines()[0]
    assert "test: chexpert" in config["label"]
    again = tmp_path / "again"
    assert cli("fewshot", "--cache", two_caches["nih"], "--test-cache", two_caches["chexpert"], "--shots", "1,2",
               "--seeds", "2", "--heads", "prototype,logreg,zeroshot", "--jobs", "2", "--allow-undefined",
               "--out", again).code == 0
    for name in ("runs.csv", "summary.csv", "per_class.csv", "supports.csv"):  # whatever --jobs
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_a_cross_dataset_run_is_the_grid_on_the_two_caches_rows_put_together(two_caches):
    """The same grid by hand: the NIH cache's train and val rows, then CheXpert's test rows with
    their labels in NIH's column order; every AUC must be the same."""
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(two_caches["nih"]) as nih, FeatureCache(two_caches["chexpert"]) as chexpert:
        support_cols = [nih.classes.index(f) for f in FINDINGS if f in SHARED.values()]
        order = [f for f in FINDINGS if f in SHARED.values()]
        test_cols = [chexpert.classes.index(next(t for t, s in SHARED.items() if s == f)) for f in order]
        keep, test = nih.table.split != "test", chexpert.table.split == "test"
        arrays = dict(
            embeddings=np.concatenate([nih.embeddings(np.flatnonzero(keep)), chexpert.embeddings(np.flatnonzero(test))]),
            labels=np.concatenate([nih.labels[keep][:, support_cols], chexpert.labels[test][:, test_cols]]),
            known=np.concatenate([nih.known[keep][:, support_cols], chexpert.known[test][:, test_cols]]),
            splits=np.concatenate([nih.table.split[keep], chexpert.table.split[test]]),
            patients=np.concatenate([nih.table.patient_ids[keep], np.char.add("x", chexpert.table.patient_ids[test])]),
            normal=np.concatenate([nih.normal[keep], chexpert.normal[test]]), classes=order)
    grid = dict(shots=(1, 2), seeds=2, heads=("prototype", "logreg"), jobs=1, allow_undefined=True)
    cross = run_fewshot(two_caches["nih"], test_cache=two_caches["chexpert"], **grid)
    by_hand = run_fewshot(**arrays, **grid)
    permutation = [cross.config["classes"].index(next(t for t, s in SHARED.items() if s == f)) for f in order]
    assert len(cross.grid.runs) == len(by_hand.grid.runs) == 8
    for a, b in zip(cross.grid.runs, by_hand.grid.runs):
        assert (a.head, a.shots, a.seed) == (b.head, b.shots, b.seed)
        np.testing.assert_array_equal(a.aucs[permutation], b.aucs)


def test_the_test_cache_must_come_from_the_same_weights(two_caches, tmp_path, cli, synthetic_cache):
    before = snapshot(tmp_path)
    run = cli("fewshot", "--cache", two_caches["nih"], "--test-cache", synthetic_cache, "--out", tmp_path / "x")
    assert_one_line_error(run, "was embedded with other weights than")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("rows, phrase", [
    ("test_class,cache_class\nPleural Effusion,Dragon\n", "names 'Dragon', which is no class of the support cache"),
    ("test_class,cache_class\nWyvern,Effusion\n", "names 'Wyvern', which is no class of the test cache"),
    ("test,cache\nPleural Effusion,Effusion\n", "has no 'test_class' column"),
])
def test_a_class_map_naming_unknown_classes_is_one_line(two_caches, tmp_path, cli, rows, phrase):
    (tmp_path / "map.csv").write_text(rows)
    before = snapshot(tmp_path)
    run = cli("fewshot", "--cache", two_caches["nih"], "--test-cache", two_caches["chexpert"], "--class-map",
              tmp_path / "map.csv", "--out", tmp_path / "x")
    assert_one_line_error(run, phrase)
    assert snapshot(tmp_path) == before


def test_a_class_map_pairs_what_the_synonyms_do_not(two_caches, tmp_path):
    (tmp_path / "map.csv").write_text("test_class,cache_class\nLung Opacity,Infiltration\nLung Opacity,Consolidation\n"
                                      "Cardiomegaly,\n")
    result = run_fewshot(two_caches["nih"], test_cache=two_caches["chexpert"], class_map=tmp_path / "map.csv",
                         shots=(1,), seeds=1, heads=("prototype",), jobs=1, allow_undefined=True)
    scored_by = result.config["test_set"]["class_map"]["scored_by"]
    assert scored_by["Lung Opacity"] == ["Infiltration", "Consolidation"] and "Cardiomegaly" not in scored_by
    assert "Cardiomegaly" in result.config["test_set"]["class_map"]["left_out"]


@pytest.fixture(scope="module")
def google_rows():
    with gzip.open(GOOGLE, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_nih_test_images_scored_against_google_s_adjudicated_labels(tmp_path, nih_metadata, google_rows, cli):
    from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache

    table = nih_metadata.table
    google = {r["Image Index"]: r for r in google_rows}
    rows = np.flatnonzero(np.isin(table.image_ids, list(google)) | (np.arange(len(table)) % 40 == 0))
    cache = tmp_path / "nih.h5"
    write_synthetic_cache(cache, nih_metadata, rows, SyntheticModel(dim=32))
    out = tmp_path / "google"
    run = cli("fewshot", "--cache", cache, "--test-labels", GOOGLE, "--shots", "1,4", "--seeds", "3",
              "--heads", "prototype,zeroshot", "--jobs", "1", "--out", out)
    assert run.code == 0, run.stderr
    assert "left out, no counterpart among the cache's classes: Fracture" in run.stderr
    assert "2,414 of its images are in the cache's train or val split" in run.stderr  # Google's own val set
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["Pneumothorax", "Nodule or mass", "Airspace opacity"]  # the map's order
    assert config["support_classes"] == ["Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax", "Consolidation"]
    assert config["test_images"] == sum(r["Set Id"] == "test" for r in google_rows) == 1962
    assert config["test_set"]["class_map"]["scored_by"]["Nodule or mass"] == ["Nodule", "Mass"]
    aucs = {r[0]: r for r in csv.reader((out / "per_class.csv").read_text().splitlines())}
    assert aucs["test images"][2] == "prevalence"
    prevalence = [float(p) for p in aucs["test images"][3:]]
    tested = [r for r in google_rows if r["Set Id"] == "test"]
    assert prevalence == pytest.approx([np.mean([r[c] == "YES" for r in tested]) for c in config["classes"]])


def test_a_relabelled_test_class_is_scored_by_the_highest_of_its_classes(tmp_path, nih_metadata, google_rows):
    from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache
    from cxrprobe.eval.retest import relabelled

    table = nih_metadata.table
    rows = np.flatnonzero(np.isin(table.image_ids, [r["Image Index"] for r in google_rows]) |
                          (np.arange(len(table)) % 60 == 0))
    cache = tmp_path / "nih.h5"
    write_synthetic_cache(cache, nih_metadata, rows, SyntheticModel(dim=16))
    retest = relabelled(cache, GOOGLE, None, ("prototype",))
    data = retest.data
    scores = np.random.default_rng(0).normal(size=(len(data.test_rows), len(data.classes)))
    scored = data.test_scores(scores)
    nodule_or_mass = data.scored_classes.index("Nodule or mass")
    expected = np.maximum(scores[:, data.classes.index("Nodule")], scores[:, data.classes.index("Mass")])
    np.testing.assert_array_equal(scored[:, nodule_or_mass], expected)
    google = {r["Image Index"]: r for r in google_rows}
    test_ids = retest.image_ids[data.test_rows]
    assert data.test_labels[:, nodule_or_mass].tolist() == [google[i]["Nodule or mass"] == "YES" for i in test_ids]


@pytest.mark.parametrize("change, phrase", [
    (lambda rows: [{**r, "Pneumothorax": "maybe"} if k == 0 else r for k, r in enumerate(rows)],
     "line 2: Pneumothorax 'maybe' is not YES/NO, 1/0 or blank"),
    (lambda rows: [{k: v for k, v in r.items() if k != "Image Index"} for r in rows], "has no image column"),
    (lambda rows: [{k: v for k, v in r.items() if k != "Airspace opacity"} for r in rows],
     "names 'Airspace opacity', which is no class of --test-labels"),
])
def test_bad_test_labels_are_one_line(tmp_path, nih_metadata, google_rows, cli, change, phrase):
    from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache

    table = nih_metadata.table
    write_synthetic_cache(tmp_path / "nih.h5", nih_metadata, np.flatnonzero(np.isin(table.image_ids, [
        r["Image Index"] for r in google_rows]) | (np.arange(len(table)) % 100 == 0)), SyntheticModel(dim=8))
    changed = change(google_rows)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(changed[0]))
        writer.writeheader()
        writer.writerows(changed)
    before = snapshot(tmp_path)
    run = cli("fewshot", "--cache", tmp_path / "nih.h5", "--test-labels", tmp_path / "labels.csv", "--out",
              tmp_path / "x", "--heads", "prototype", "--seeds", "1", "--shots", "1")
    assert_one_line_error(run, phrase)
    assert snapshot(tmp_path) == before


def test_retesting_options_are_checked(tmp_path, synthetic_cache, cli):
    both = cli("fewshot", "--cache", synthetic_cache, "--test-cache", synthetic_cache, "--test-labels", GOOGLE,
               "--out", tmp_path / "x")
    assert_one_line_error(both, "--test-cache and --test-labels exclude each other")
    alone = cli("fewshot", "--cache", synthetic_cache, "--class-map", GOOGLE, "--out", tmp_path / "x")
    assert_one_line_error(alone, "--class-map goes with --test-cache or --test-labels")
