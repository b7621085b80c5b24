"""`cxrprobe fewshot` end to end: results files, determinism across --jobs, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil

import h5py
import numpy as np
import pytest
from test_cli_errors import assert_one_line_error, snapshot

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.heads import parse_heads
from cxrprobe.labels import FINDINGS

GRID = ("--shots", "1,4", "--seeds", "3", "--test-bootstrap", "20", "-q")


@pytest.fixture(scope="module")
def grid_dirs(synthetic_cache, tmp_path_factory):
    """The same small grid run with --jobs 1 and --jobs 2."""
    from cxrprobe.cli import main

    root = tmp_path_factory.mktemp("grids")
    dirs = {}
    for jobs in (1, 2):
        out = root / f"jobs{jobs}"
        with pytest.raises(SystemExit) as stop:
            main(["fewshot", "--cache", str(synthetic_cache), "--out", str(out), *GRID, "--jobs", str(jobs)])
        assert stop.value.code == 0
        dirs[jobs] = out
    return dirs


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_results_dir_holds_every_file(grid_dirs):
    names = sorted(p.name for p in grid_dirs[1].iterdir())
    assert names == ["auc_vs_labelled.png", "auc_vs_shots.png", "config.json", "paired.csv", "per_class.csv",
                     "runs.csv", "summary.csv", "support_counts.csv", "supports.csv"]
    runs = read(grid_dirs[1] / "runs.csv")
    assert len(runs) == len(parse_heads("all")) * 2 * 3 * 15  # heads x shots x seeds x (14 classes + mean)
    summary = read(grid_dirs[1] / "summary.csv")
    assert {row["n_seeds"] for row in summary} == {"3"}
    for row in summary:
        assert float(row["ci95_low"]) <= float(row["mean_auc"]) <= float(row["ci95_high"])
        # seeds and test patients resampled together: a CI around the mean, wider for zeroshot's fixed scores
        assert float(row["seed_and_test_ci95_low"]) < float(row["mean_auc"]) < float(row["seed_and_test_ci95_high"])
    config = json.loads((grid_dirs[1] / "config.json").read_text())
    assert config["test_bootstrap"]["resamples"] == 20 and config["test_bootstrap"]["unit"] == "patient"
    assert config["shots"] == [1, 4] and config["seeds"] == [0, 1, 2] and config["protocol"] == "default"
    assert config["encoder"]["adapted"] is False and config["labelled_images_used"]["adaptation"] == 0
    assert config["support"] == {"design": "per-finding", "normals": "N"}
    assert "mean of the unlabelled training images" in config["note"]


def test_what_n_shot_means_is_written_down(grid_dirs, synthetic_cache):
    """Each (shots, seed)'s images, normals and effective positives; labelled images per run."""
    counts = read(grid_dirs[1] / "support_counts.csv")
    assert len(counts) == 2 * 3
    supports = read(grid_dirs[1] / "supports.csv")
    with FeatureCache(synthetic_cache) as cache:
        row_of = {image: i for i, image in enumerate(cache.table.image_ids)}
        labels = cache.labels
    for count in counts:
        ids = [r["image_id"] for r in supports if (r["shots"], r["seed"]) == (count["shots"], count["seed"])]
        held = labels[[row_of[i] for i in ids]]
        assert int(count["images"]) == len(ids) and int(count["no_finding"]) == int((held.sum(1) == 0).sum())
        positives = [int(count[f"positives_{f}"]) for f in FINDINGS]
        assert positives == held.sum(0).tolist() and min(positives) >= 1
    summary = {(r["head"], r["shots"]): r for r in read(grid_dirs[1] / "summary.csv")}
    four = [int(c["images"]) for c in counts if c["shots"] == "4"]
    assert float(summary["logreg", "4"]["mean_labelled_images"]) == pytest.approx(np.mean(four))
    assert float(summary["zeroshot", "4"]["mean_labelled_images"]) == 0  # text only


def test_results_carry_average_precision_prevalence_and_adjusted_pairs(grid_dirs, synthetic_cache):
    runs = read(grid_dirs[1] / "runs.csv")
    means = [r for r in runs if r["class"] == "mean"]
    assert all(0 < float(r["ap"]) < 1 for r in means)
    summary = read(grid_dirs[1] / "summary.csv")
    for row in summary:
        assert float(row["ap_ci95_low"]) <= float(row["mean_ap"]) <= float(row["ap_ci95_high"])
    per_class = read(grid_dirs[1] / "per_class.csv")
    assert {r["metric"] for r in per_class} == {"auc", "ap", "prevalence"}
    prevalence = next(r for r in per_class if r["metric"] == "prevalence")
    with FeatureCache(synthetic_cache) as cache:
        test = cache.rows("test")
        expected = cache.labels[test].mean(axis=0)
    assert np.allclose([float(prevalence[f]) for f in FINDINGS], expected)
    zeroshot_ap = next(r for r in per_class if r["head"] == "zeroshot" and r["metric"] == "ap")
    assert float(zeroshot_ap["Hernia"]) > float(prevalence["Hernia"])  # above a constant score's AP
    paired = read(grid_dirs[1] / "paired.csv")
    for shots in ("1", "4"):
        level = [r for r in paired if r["shots"] == shots and r["p_value"]]
        for r in level:
            assert float(r["p_holm"]) >= float(r["p_value"]) and float(r["ci95_low"]) <= float(r["ci95_high"])
            assert (r["prespecified"] == "True") == ("zeroshot" in (r["head"], r["versus"])
                                                     or "logreg" in (r["head"], r["versus"]))
        smallest = min(level, key=lambda r: float(r["p_value"]))
        assert float(smallest["p_holm"]) == pytest.approx(min(1.0, len(level) * float(smallest["p_value"])))


def test_runs_are_byte_identical_whatever_jobs_is(grid_dirs):
    for name in ("runs.csv", "summary.csv", "supports.csv", "paired.csv", "per_class.csv"):
        assert (grid_dirs[1] / name).read_bytes() == (grid_dirs[2] / name).read_bytes(), name


def test_supports_replay_and_hold_no_test_or_validation_image(grid_dirs, synthetic_cache):
    with FeatureCache(synthetic_cache) as cache:
        split = dict(zip(cache.table.image_ids, cache.table.split))
    supports = read(grid_dirs[1] / "supports.csv")
    assert {(r["shots"], r["seed"]) for r in supports} == {(s, k) for s in ("1", "4") for k in ("0", "1", "2")}
    assert {split[r["image_id"]] for r in supports} == {"train"}


def test_learned_heads_rise_with_shots_and_zeroshot_is_above_chance(grid_dirs):
    mean = {(r["head"], int(r["shots"])): float(r["mean_auc"]) for r in read(grid_dirs[1] / "summary.csv")}
    for head in ("logreg", "prototype", "linear"):
        assert mean[(head, 4)] > mean[(head, 1)], head
    assert mean[("zeroshot", 1)] > 0.55


def test_bad_fewshot_inputs_fail_cleanly(synthetic_cache, tmp_path, cli):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(synthetic_cache, work / "cache.h5")
    with h5py.File(work / "cache.h5", "r") as src, h5py.File(work / "notext.h5", "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            if name != "text":
                src.copy(name, dst)
    with h5py.File(work / "incomplete.h5", "w") as dst, h5py.File(work / "cache.h5", "r") as src:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst.attrs["complete"] = False
    (work / "taken").mkdir()
    (work / "taken" / "notes.txt").write_text("mine\n")
    cache = work / "cache.h5"
    new = work / "new"
    cases = [
        (("--cache", cache, "--out", new, "--shots", "1,,2"), "--shots takes positive whole numbers"),
        (("--cache", cache, "--out", new, "--shots", "0"), "--shots must be at least 1"),
        (("--cache", cache, "--out", new, "--shots", "-4"), "--shots takes positive whole numbers"),
        (("--cache", cache, "--out", new, "--shots", "a"), "--shots takes positive whole numbers"),
        (("--cache", cache, "--out", new, "--shots", "2,2"), "lists a value twice"),
        (("--cache", cache, "--out", new, "--seeds", "0"), "--seeds must be at least 1"),
        (("--cache", cache, "--out", new, "--jobs", "0"), "--jobs must be at least 1"),
        (("--cache", cache, "--out", new, "--heads", "logreg,svm"), "unknown head 'svm'; valid heads: paper-mlp"),
        (("--cache", work / "incomplete.h5", "--out", new, "--seeds", "1"), "is not complete"),
        (("--cache", work / "notext.h5", "--out", new, "--seeds", "1", "--heads", "zeroshot"), "no text embeddings"),
        (("--cache", work / "absent.h5", "--out", new), "no cache at"),
        (("--cache", cache, "--out", work / "taken", "--seeds", "1"), "is not an empty folder"),
        (("--cache", cache, "--out", work / "missing" / "r", "--seeds", "1"), "does not exist"),
        (("--cache", cache, "--out", new, "--shots", "64", "--seeds", "1", "--strict-shots"), "fewer than 64 shots"),
    ]
    before = snapshot(work)
    for args, message in cases:
        assert_one_line_error(cli("fewshot", *args), message)
    assert snapshot(work) == before
    assert not new.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_report_re_renders_one_or_several_results_dirs(grid_dirs, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps to the terminal; keep rows on one line
    one = cli("report", grid_dirs[1])
    assert one.code == 0 and "logreg" in one.stdout and "3 seeds" in one.stdout
    plot = tmp_path / "both.png"
    both = cli("report", grid_dirs[1], grid_dirs[2], "--plot", plot)
    assert both.code == 0 and "jobs1: logreg" in both.stdout and "jobs2: logreg" in both.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_one_line_error(cli("report", tmp_path), "is not a cxrprobe results dir")
    assert_one_line_error(cli("report", grid_dirs[1], "--plot", tmp_path / "x.jpg"), "must name a .png")


def test_a_results_dir_from_before_average_precision_still_renders(grid_dirs, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    old = tmp_path / "old"
    shutil.copytree(grid_dirs[1], old)
    rows = read(old / "summary.csv")
    columns = ["head", "shots", "mean_auc", "std", "ci95_low", "ci95_high", "n_seeds"]  # the format until 2026-12
    with open(old / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    shown = cli("report", old)
    assert shown.code == 0 and "logreg" in shown.stdout, shown.stderr


def test_zeroshot_command_gives_per_class_auc_with_bootstrap_cis(synthetic_cache, tmp_path, cli):
    out = tmp_path / "zs"
    result = cli("zeroshot", "--cache", synthetic_cache, "--out", out, "--bootstrap", "200")
    assert result.code == 0, result.stderr
    rows = read(out / "zeroshot.csv")
    assert [r["class"] for r in rows][-1] == "mean" and len(rows) == 15
    with FeatureCache(synthetic_cache) as cache:
        from cxrprobe.heads.zeroshot import ZeroShotHead
        from cxrprobe.metrics.auc import per_class_auc

        test = cache.rows("test")
        expected = per_class_auc(cache.labels[test], ZeroShotHead(text=cache.text_prompts()).decision_function(
            cache.embeddings(test)))
    for row, auc in zip(rows[:14], expected):
        assert float(row["auc"]) == pytest.approx(auc, abs=1e-12)
        assert float(row["ci95_low"]) < float(row["auc"]) < float(row["ci95_high"])
    mean = rows[-1]
    assert float(mean["ci95_low"]) < float(mean["auc"]) < float(mean["ci95_high"])  # the mean has its own CI
    config = json.loads((out / "config.json").read_text())
    assert config["what"].startswith("zero-shot from text") and config["bootstrap"]["unit"] == "patient"
    with FeatureCache(synthetic_cache) as cache:
        test = cache.rows("test")
        hernia = cache.table.patient_ids[test][cache.labels[test][:, FINDINGS.index("Hernia")] == 1]
    assert int(rows[FINDINGS.index("Hernia")]["n_positive_patients"]) == len(set(hernia)) < len(hernia) + 1
    assert_one_line_error(cli("zeroshot", "--cache", synthetic_cache, "--out", out), "is not an empty folder")
    assert_one_line_error(cli("zeroshot", "--cache", synthetic_cache, "--out", tmp_path / "z2", "--negative", "x"),
                          "--negative must be one of")


def test_search_on_validation_is_recorded(synthetic_cache, tmp_path, cli):
    out = tmp_path / "searched"
    result = cli("fewshot", "--cache", synthetic_cache, "--out", out, "--shots", "2", "--seeds", "2",
                 "--heads", "logreg", "--search", "-q")
    assert result.code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["search_on_validation"] is True
    assert config["labelled_images_used"]["validation_per_run_max"] > 0


def test_zeroshot_with_a_prompts_file_encodes_with_the_cache_model(small_dataset, tmp_path, cli):
    cache = tmp_path / "tiny.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", cache, "--model", "cxrprobe-tiny",
               "--pretrained", "none", "--workers", "0", "-q").code == 0
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"Pneumonia": {"positive": ["pneumonia", "lung infection"], "negative": ["clear lungs"]}}))
    out = tmp_path / "zs"
    result = cli("zeroshot", "--cache", cache, "--out", out, "--prompts", prompts, "--bootstrap", "50",
                 "--allow-undefined")  # 24 generated images: some findings have no test positive
    assert result.code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    used = [p["prompt"] for p in config["prompts"] if p["class"] == "Pneumonia"]
    assert used == ["pneumonia", "lung infection", "clear lungs"]
    assert any(p["class"] == "Hernia" for p in config["prompts"])  # the others keep the cache's prompts
    bad = tmp_path / "bad.json"
    for content, message in [("{", "is not valid JSON"), ('{"Pneumonitis": {}}', "unknown finding 'Pneumonitis'"),
                             ('{"Mass": {"positive": ["mass"]}}', "Mass needs a non-empty list of negative")]:
        bad.write_text(content)
        assert_one_line_error(cli("zeroshot", "--cache", cache, "--out", tmp_path / "x", "--prompts", bad,
                                  "--allow-undefined"), message)


def test_new_prompts_need_the_cache_model(synthetic_cache, tmp_path, cli):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"Mass": {"positive": ["mass"], "negative": ["no mass"]}}))
    assert_one_line_error(cli("zeroshot", "--cache", synthetic_cache, "--out", tmp_path / "z", "--prompts", prompts),
                          "cannot rebuild the cache's model synthetic/none")


def test_a_killed_grids_memory_maps_are_swept_by_the_next(synthetic_cache, tmp_path, monkeypatch):
    import subprocess
    import tempfile

    from cxrprobe.eval.runner import GridSpec, run_grid

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid is free again: a process that no longer exists
    stale = tmp_path / f".cxrprobe-grid.abc-{gone.pid}"
    live = tmp_path / f".cxrprobe-grid.xyz-{os.getpid()}"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "embeddings.npy").write_bytes(b"left by a killed grid")
    run_grid(synthetic_cache, GridSpec((1,), 2, ("logreg",)), jobs=2)
    assert not stale.exists()
    assert live.exists()  # a running process's folder is never touched
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]  # and the grid removed its own


def test_an_adapted_encoder_is_labelled_with_its_labels_and_held_out_findings():
    from cxrprobe.commands.fewshot import encoder_record

    plain = encoder_record({"model": "ViT-B-32"})
    assert plain["adapted"] is False and plain["labelled_images"] == 0
    adaptation = json.dumps({"labelled_images": 86524, "held_out": ["Pneumonia", "Hernia"]})
    held = encoder_record({"checkpoint": "runs/x", "adaptation": adaptation})
    assert held["labelled_images"] == 86524 and held["summary"] == (
        "encoder adapted with 86,524 labelled images (held out: Pneumonia, Hernia)")
    assert "only for the held-out findings (Pneumonia, Hernia)" in held["label_efficiency"]
    older = encoder_record({"checkpoint": "runs/x"})  # a cache embedded before adaptation was recorded
    assert older["adapted"] and older["labelled_images"] is None and "unrecorded" in older["summary"]


def test_other_support_designs_run_and_are_recorded(synthetic_cache, tmp_path, cli):
    out = tmp_path / "posneg"
    result = cli("fewshot", "--cache", synthetic_cache, "--out", out, "--shots", "2", "--seeds", "2",
                 "--heads", "logreg,prototype", "--support", "pos-neg", "--jobs", "1", "-q")
    assert result.code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["support"] == {"design": "pos-neg", "normals": "N"}
    for count in read(out / "support_counts.csv"):
        assert min(int(count[f"positives_{f}"]) for f in FINDINGS) >= 2
    assert_one_line_error(cli("fewshot", "--cache", synthetic_cache, "--out", tmp_path / "x", "--support", "realistic",
                              "--normals", "0"), "--normals sets the per-finding design's normals")


def test_all_shots_fits_every_training_image_once_and_refits_only_random_heads(synthetic_cache, tmp_path, cli,
                                                                               monkeypatch):
    from cxrprobe.heads.tip_adapter_f import TipAdapterFHead

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(TipAdapterFHead, "max_support", 100)  # more than a 2-shot set, fewer than all
    with FeatureCache(synthetic_cache) as cache:
        train = set(cache.table.image_ids[cache.rows("train")])
    out = tmp_path / "all"
    result = cli("fewshot", "--cache", synthetic_cache, "--out", out, "--shots", "2,all", "--seeds", "2",
                 "--heads", "logreg,linear,zeroshot,tip-adapter-f", "--jobs", "1", "-q")
    assert result.code == 0, result.stderr
    assert f"all = {len(train):,} training images" in result.stdout and "tip-adapter-f: not fitted" in result.stdout
    means = {(r["head"], r["shots"], r["seed"]): r["auc"] for r in read(out / "runs.csv") if r["class"] == "mean"}
    assert means[("logreg", "all", "0")] == means[("logreg", "all", "1")]  # one fit of one draw
    assert means[("linear", "all", "0")] != means[("linear", "all", "1")]  # its initial weights are the seed's
    assert ("tip-adapter-f", "2", "1") in means and not any(k[:2] == ("tip-adapter-f", "all") for k in means)
    listed = [r for r in read(out / "supports.csv") if r["shots"] == "all"]
    assert {r["seed"] for r in listed} == {"0"} and {r["image_id"] for r in listed} == train
    assert {r["images"] for r in read(out / "support_counts.csv") if r["shots"] == "all"} == {str(len(train))}
    summary = {(r["head"], r["shots"]): r for r in read(out / "summary.csv")}
    assert float(summary[("logreg", "all")]["mean_labelled_images"]) == len(train)
    assert float(summary[("logreg", "all")]["mean_auc"]) > float(summary[("logreg", "2")]["mean_auc"])
    assert not any(r["head"] == "tip-adapter-f" and r["shots"] == "all" for r in read(out / "paired.csv"))
    config = json.loads((out / "config.json").read_text())
    assert config["shots"] == [2, "all"] and config["full_data"]["images"] == len(train)
    assert "100 images" in config["not_fitted"]["tip-adapter-f"]
    shown = cli("report", out)
    header = next(line for line in shown.stdout.splitlines() if "2-shot" in line)
    assert shown.code == 0 and header.split()[-2:] == ["all", "┃"]
