"""`cxrprobe adapt` on CPU with the tiny model: it learns, trains only what it should, resumes exactly."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch
from PIL import Image, ImageOps
from test_cli_errors import assert_one_line_error, snapshot

from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.models.loading import load_model
from cxrprobe.models.unfreeze import load_trainable_state, unfreeze_top
from cxrprobe.train.checkpoint import load_checkpoint

TINY = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--unfreeze", "1", "--batch-size", "16",
        "--workers", "0")


@pytest.fixture(scope="module")
def adapt_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    write_nih_folder(root, 80, seed=2, image_size=96, test_fraction=0.2)
    return root


@pytest.fixture(scope="module")
def adapted_run(adapt_data, tmp_path_factory):
    """One finished 2-epoch run for the module; read-only for tests (copy it to change it)."""
    from cxrprobe.cli import main

    run = tmp_path_factory.mktemp("adapted") / "run"
    with pytest.raises(SystemExit) as stop:
        main(["adapt", "--data-dir", str(adapt_data), "--out", str(run), *TINY, "--epochs", "2", "-q"])
    assert stop.value.code == 0
    return run


def metrics(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_adapt_learns_and_changes_only_the_intended_parameters(adapted_run):
    run = adapted_run
    rows = metrics(run)
    assert len(rows) == 2 and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "training_curve.png"} <= {p.name for p in run.iterdir()}
    before = load_model("cxrprobe-tiny", "none", "cpu").model.visual.state_dict()
    after = load_checkpoint(run / "last.pt")["visual"]
    reference = load_model("cxrprobe-tiny", "none", "cpu").model.visual
    unfreeze_top(reference, 1)
    trainable = {n for n, p in reference.named_parameters() if p.requires_grad}
    # the checkpoint holds the trained tensors only (the rest is the base weights), each moved
    assert set(after) == trainable and len(trainable) < len(before)
    for name in trainable:
        assert not torch.equal(before[name], after[name]), name
    adapted = load_model("cxrprobe-tiny", "none", "cpu").model.visual
    load_trainable_state(adapted, after)
    for name, value in adapted.state_dict().items():
        assert torch.equal(value, after[name] if name in trainable else before[name]), name


def test_resume_ends_where_an_uninterrupted_run_ends(adapt_data, adapted_run, tmp_path, cli):
    whole, split = adapted_run, tmp_path / "split"
    result = cli("adapt", "--data-dir", adapt_data, "--out", split, *TINY, "--epochs", "1")
    assert result.code == 0 and "trainable parameters" in result.stderr, result.stderr
    assert cli("adapt", "--data-dir", adapt_data, "--out", split, *TINY, "--epochs", "2", "--resume").code == 0
    a, b = load_checkpoint(whole / "last.pt"), load_checkpoint(split / "last.pt")
    for key in ("visual", "head"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert (whole / "metrics.csv").read_text() == (split / "metrics.csv").read_text()
    # killed after its last checkpoint, before the files that follow it: the resume has no
    # epoch left to run, and still writes them as the uninterrupted run did
    for name in ("metrics.csv", "training_curve.png", "summary.json"):
        (split / name).unlink()
    assert cli("adapt", "--data-dir", adapt_data, "--out", split, *TINY, "--epochs", "2", "--resume").code == 0
    for name in ("metrics.csv", "training_curve.png", "summary.json", "last.pt", "best.pt"):
        assert (whole / name).read_bytes() == (split / name).read_bytes(), name


def test_a_run_is_the_same_whatever_the_number_of_workers(adapt_data, adapted_run, tmp_path, cli):
    """Decoding, augmentation and batching in two worker processes that live across epochs give
    the very checkpoints the main process alone gives."""
    run = tmp_path / "run"
    assert cli("adapt", "--data-dir", adapt_data, "--out", run, *TINY, "--workers", "2", "--epochs", "2").code == 0
    for name in ("last.pt", "best.pt", "metrics.csv", "pixels-train.npy", "pixels-val.npy"):
        assert (run / name).read_bytes() == (adapted_run / name).read_bytes(), name


def test_force_onto_a_run_of_other_images_decodes_them_anew(adapt_data, tmp_path, cli):
    # the same metadata and file names, other pixels: same counts, which the old size check let through
    other = tmp_path / "other-data"
    shutil.copytree(adapt_data, other)
    for png in other.rglob("*.png"):
        with Image.open(png) as image:
            ImageOps.invert(image.convert("L")).save(png)
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    assert cli("adapt", "--data-dir", adapt_data, "--out", run, *TINY, "--epochs", "1").code == 0
    first = (run / "pixels-train.npy").read_bytes()
    assert cli("adapt", "--data-dir", other, "--out", run, *TINY, "--epochs", "1", "--force").code == 0
    assert cli("adapt", "--data-dir", other, "--out", fresh, *TINY, "--epochs", "1").code == 0
    for name in ("pixels-train.npy", "pixels-val.npy", "pixels-train.source", "last.pt"):
        assert (run / name).read_bytes() == (fresh / name).read_bytes(), name
    assert (run / "pixels-train.npy").read_bytes() != first
    # one file replaced in place: same names, same paths
    pixels = [(run / f"pixels-{split}.npy").read_bytes() for split in ("train", "val")]
    png = sorted(other.rglob("*.png"))[0]
    with Image.open(png) as image:
        ImageOps.invert(image.convert("L")).save(png)
    assert cli("adapt", "--data-dir", other, "--out", run, *TINY, "--epochs", "1", "--force").code == 0
    assert [(run / f"pixels-{split}.npy").read_bytes() for split in ("train", "val")] != pixels


def test_bad_adapt_inputs(adapt_data, tmp_path, cli):
    run = tmp_path / "run"
    assert cli("adapt", "--data-dir", adapt_data, "--out", run, *TINY, "--epochs", "1").code == 0
    (run / "last.pt").write_bytes(b"not a checkpoint")
    empty = tmp_path / "empty-data"
    empty.mkdir()
    for name in ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"):
        (empty / name).write_bytes((adapt_data / name).read_bytes())
    before = snapshot(tmp_path)
    cases = [
        (("--out", tmp_path / "a", "--unfreeze", "3"), "--unfreeze must be between 0 and 2"),
        (("--out", tmp_path / "a", "--unfreeze", "-1"), "--unfreeze must be between 0 and 2"),
        (("--out", run, "--resume"), "cannot be read safely"),
        (("--out", run), "already holds a run; use --resume"),
        (("--out", run, "--resume", "--hold-out", "Hernia"), "holds a different run"),
        (("--out", tmp_path / "a", "--hold-out", "Hernias"), "unknown finding 'Hernias'"),
    ]
    base = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--batch-size", "16", "--epochs", "1")
    for extra, message in cases:
        unfreeze = () if "--unfreeze" in extra else ("--unfreeze", "1")
        assert_one_line_error(cli("adapt", "--data-dir", adapt_data, *base, *unfreeze, *extra), message)
    assert_one_line_error(cli("adapt", "--data-dir", empty, "--out", tmp_path / "b", *TINY), "no training images")
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_embed_from_an_adapt_run_stores_the_head_logits_and_the_adapted_head_runs(adapt_data, adapted_run, tmp_path,
                                                                                  cli):
    import json

    import numpy as np

    from cxrprobe.cache.reader import FeatureCache
    from cxrprobe.models.mlp_head import PaperHead

    run = adapted_run
    cache = tmp_path / "adapted.h5"
    result = cli("embed", "--data-dir", adapt_data, "--out", cache, "--checkpoint", run, "--device", "cpu",
                 "--workers", "0", "-q")
    assert result.code == 0, result.stderr
    with FeatureCache(cache) as opened:
        assert opened.attrs["pretrained"] == "none+adapted" and opened.attrs["checkpoint"] == str(run)
        logits = opened.head_logits()
        embeddings = opened.embeddings()
        summary = opened.summary()
    assert summary["adapted_head"] is True
    head = PaperHead(embeddings.shape[1])
    head.load_state_dict(load_checkpoint(run / "best.pt")["head"])
    head.eval()
    with torch.inference_mode():
        expected = head(torch.from_numpy(embeddings)).numpy()
    assert logits.shape == (len(embeddings), 14)
    assert np.allclose(logits, expected, atol=0.05)  # stored embeddings are float16; logits were computed before
    out = tmp_path / "results"
    # a small generated test split lacks some findings: their AUC is left empty, by request
    assert cli("fewshot", "--cache", cache, "--out", out, "--shots", "1", "--seeds", "2", "--allow-undefined",
               "--jobs", "1", "-q").code == 0
    config = json.loads((out / "config.json").read_text())
    assert "adapted" in config["heads"]
    done = json.loads((run / "summary.json").read_text())
    labelled = done["train_images"] + done["val_images"]
    assert labelled > 0 and config["labelled_images_used"]["adaptation"] == labelled
    assert config["encoder"]["adapted"] and f"adapted with {labelled:,} labelled images" in config["label"]
    assert "no finding was held out" in config["note"]
    plain = tmp_path / "plain.h5"
    assert cli("embed", "--data-dir", adapt_data, "--out", plain, *TINY[:6], "--workers", "0", "-q").code == 0
    assert_one_line_error(cli("fewshot", "--cache", plain, "--out", tmp_path / "r2", "--heads", "adapted",
                              "--allow-undefined"),
                          "holds no adapted-head logits")
    assert_one_line_error(cli("embed", "--data-dir", adapt_data, "--out", tmp_path / "x.h5", "--checkpoint", tmp_path),
                          "is not a finished cxrprobe adapt run")


def test_embed_reads_what_adapt_decoded_and_gets_the_same_embeddings(adapt_data, adapted_run, tmp_path, cli):
    """The run's pixel caches stand in for decoding its train and val images, exactly; an image
    whose file changed since, or lies elsewhere, is decoded anew."""
    import h5py
    import numpy as np

    def embed(data, run, out):  # noqa: ANN001, ANN202 - the cache, and how many images came decoded
        result = cli("embed", "--data-dir", data, "--out", out, "--checkpoint", run, "--device", "cpu",
                     "--workers", "0")
        assert result.code == 0, result.stderr
        note = next(line for line in result.stderr.splitlines() if "come decoded" in line)
        return out, int(note.split()[1].replace(",", ""))

    stripped = tmp_path / "run-without-pixels"
    shutil.copytree(adapted_run, stripped, ignore=shutil.ignore_patterns("pixels-*"))
    reused, n_reused = embed(adapt_data, adapted_run, tmp_path / "reused.h5")
    decoded, n_decoded = embed(adapt_data, stripped, tmp_path / "decoded.h5")
    with h5py.File(reused, "r") as a, h5py.File(decoded, "r") as b:
        assert np.array_equal(a["embeddings"][()], b["embeddings"][()])
        assert np.array_equal(a["head/logits"][()], b["head/logits"][()])
        split = a["split"].asstr()[()]
    assert n_reused == int(np.count_nonzero(split != "test")) > 0 and n_decoded == 0
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(adapt_data, elsewhere)
    assert embed(elsewhere, adapted_run, tmp_path / "elsewhere.h5")[1] == 0  # other files: none taken on trust
    run = tmp_path / "run"
    assert cli("adapt", "--data-dir", elsewhere, "--out", run, *TINY, "--epochs", "1").code == 0
    test_images = set((elsewhere / "test_list.txt").read_text().split())
    changed = next(p for p in sorted((elsewhere / "images").glob("*.png")) if p.name not in test_images)
    changed.write_bytes(changed.read_bytes())  # rewritten in place: a new modification time
    assert embed(elsewhere, run, tmp_path / "changed.h5")[1] == n_reused - 1


def test_paper_protocol_continues_the_adapted_head_from_the_cache(adapt_data, adapted_run, tmp_path, cli):
    import json

    import numpy as np

    from cxrprobe.cache.reader import FeatureCache
    from cxrprobe.heads.paper_mlp import PaperMlpHead

    run = adapted_run
    cache = tmp_path / "adapted.h5"
    assert cli("embed", "--data-dir", adapt_data, "--out", cache, "--checkpoint", run, "--device", "cpu",
               "--workers", "0", "-q").code == 0
    with FeatureCache(cache) as opened:
        state, X, logits = opened.head_state(), opened.embeddings(), opened.head_logits()
    # zero epochs of continued training is the adapted head itself
    untouched = PaperMlpHead(init_state=state, epochs=0).fit(X[:4], np.zeros((4, 14))).decision_function(X)
    assert np.allclose(untouched, logits, atol=0.05)
    out = tmp_path / "paper"
    result = cli("fewshot", "--cache", cache, "--out", out, "--shots", "1,2", "--protocol", "paper",
                 "--allow-undefined", "--jobs", "1", "-q")
    assert result.code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"] == "paper" and config["seeds"] == [0] and set(config["heads"]) == {"adapted", "paper-mlp"}
    assert "the paper's protocol" in config["label"]
    assert {line.split(",")[1] for line in (out / "runs.csv").read_text().splitlines()[1:]} == {"paper"}
    plain = tmp_path / "plain.h5"
    assert cli("embed", "--data-dir", adapt_data, "--out", plain, *TINY[:6], "--workers", "0", "-q").code == 0
    assert_one_line_error(cli("fewshot", "--cache", plain, "--out", tmp_path / "r", "--protocol", "paper"),
                          "continues training the adapted head")
    assert_one_line_error(cli("fewshot", "--cache", plain, "--out", tmp_path / "r", "--protocol", "papers"),
                          "--protocol must be one of default, paper")


def test_held_out_labels_reach_neither_the_loss_nor_the_selection(adapt_data, tmp_path, cli):
    from cxrprobe.labels import FINDINGS

    run = tmp_path / "all-held-out"
    result = cli("adapt", "--data-dir", adapt_data, "--out", run, *TINY, "--epochs", "2", "--hold-out", ",".join(FINDINGS))
    assert result.code == 0, result.stderr
    rows = metrics(run)
    assert all(float(r["train_loss"]) == 0.0 for r in rows)  # every label masked: nothing to learn from
    assert all(r["val_mean_auc"] == "nan" for r in rows)  # and nothing to select on
    assert not (run / "best.pt").exists()
    import json

    assert json.loads((run / "summary.json").read_text())["held_out"] == list(FINDINGS)
    before = load_model("cxrprobe-tiny", "none", "cpu").model.visual.state_dict()
    after = load_checkpoint(run / "last.pt")["visual"]
    # only weight decay moved the trainable weights: no gradient came from a held-out label
    reference = load_model("cxrprobe-tiny", "none", "cpu").model.visual
    unfreeze_top(reference, 1)
    for name, p in reference.named_parameters():
        if p.requires_grad and p.ndim > 1:
            ratio = (after[name] / before[name])[before[name].abs() > 1e-3]
            assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-4), name
