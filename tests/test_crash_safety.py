"""SIGKILL ten times each into embed, adapt and fewshot (real child processes, see processes.py),
each kill placed by a progress marker on disk so that it lands where something could break:
after every kill nothing reads as complete that is not, and the resume or rerun that follows
writes the very bytes of an uninterrupted run, leaving no temporary behind. Two runs at once:
two fewshot runs on one cache both succeed; a second embed onto the same cache refuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import snapshot
from processes import kill_when, run, start
from test_resume import EMBED, rows_done

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.errors import CacheError

KILLS = 10
ADAPT = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--unfreeze", "1",
         "--batch-size", "16", "--epochs", "8", "--workers", "0", "-q")
FEWSHOT = ("--shots", "1,4", "--seeds", "2", "--heads", "logreg,prototype,knn,zeroshot", "--jobs", "1", "-q")
N_IMAGES = 60


def finish(*args: object) -> float:
    """Run to the end; the seconds it took."""
    started = time.monotonic()
    result = run(*args)
    assert result.code == 0, result.stderr
    return time.monotonic() - started


def same_run(run_dir: Path, reference: Path) -> bool:
    """Two adapt run dirs hold the same bytes, but for the output path config.json records."""
    config = [{k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "out"}
              for d in (run_dir, reference)]
    files = [{k: v for k, v in snapshot(d).items() if k.name != "config.json"} for d in (run_dir, reference)]
    return config[0] == config[1] and files[0] == files[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def images(real_nih, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-images")
    write_nih_folder(root, N_IMAGES, seed=11, png_pool=sorted((real_nih / "images").glob("*.png")))
    return root


def test_embed_killed_ten_times_resumes_to_identical_bytes(images, tmp_path):
    reference = tmp_path / "reference.h5"
    finish("embed", "--data-dir", images, "--out", reference, *EMBED)
    out, partial = tmp_path / "cache.h5", tmp_path / "cache.h5.partial"
    rng = np.random.default_rng(0)
    # rows committed (two a batch): none yet (the working file just made), eight random
    # points, and every row (the finished shard being merged into the cache)
    thresholds = [0, *sorted(rng.choice(np.arange(1, N_IMAGES - 1), KILLS - 2, replace=False).tolist()), N_IMAGES]
    kills = 0
    for at_least in thresholds:
        child = start("embed", "--data-dir", images, "--out", out, *EMBED, "--resume")
        kills += kill_when(child, lambda n=at_least: partial.exists() and rows_done(partial) >= n)
        assert not out.exists(), "a killed embed left a file under the final name"
        with pytest.raises(CacheError, match="not complete"):
            FeatureCache(partial)
    assert kills == KILLS
    finish("embed", "--data-dir", images, "--out", out, *EMBED, "--resume")
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists() and leftovers(tmp_path) == []


def epochs_done(run_dir: Path) -> int:
    """Epochs whose checkpoint and metrics are written (metrics.csv follows last.pt)."""
    try:
        return len((run_dir / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def test_adapt_killed_ten_times_resumes_to_identical_bytes(tmp_path):
    data = tmp_path / "data"
    write_nih_folder(data, N_IMAGES, seed=2, image_size=96, test_fraction=0.2)
    reference = tmp_path / "reference"
    seconds = finish("adapt", "--data-dir", data, "--out", reference, *ADAPT)
    assert (reference / "summary.json").is_file()
    run_dir = tmp_path / "run"
    epochs = json.loads((reference / "summary.json").read_text())["epochs_run"]  # early stopping may end it
    assert epochs >= 3
    epoch_seconds = seconds / (epochs + 1)
    rng = np.random.default_rng(1)
    # while decoding the training images' pixel cache, then the validation images', at the
    # first epoch's start, then a random part of an epoch after an epoch ended (each of the
    # run's epochs but its last, in order): inside training, validation or the writes of the
    # checkpoint and metrics, or in the start-up of a run resumed after that epoch
    markers = [(lambda: run_dir.is_dir(), 0.0), (lambda: (run_dir / "pixels-train.source").exists(), 0.0),
               (lambda: (run_dir / "pixels-val.source").exists(), 0.0)]
    ends = sorted(rng.choice(np.arange(1, epochs), KILLS - len(markers)).tolist())
    markers += [(lambda e=e: epochs_done(run_dir) >= e, rng.uniform(0, epoch_seconds / 2)) for e in ends]
    kills = 0
    for marker, delay in markers:
        child = start("adapt", "--data-dir", data, "--out", run_dir, *ADAPT, "--resume")
        kills += kill_when(child, marker, after=delay)
        assert not (run_dir / "summary.json").exists()
        if (run_dir / "best.pt").is_file():  # unfinished, and nothing downstream takes it for done
            refused = run("embed", "--data-dir", data, "--out", tmp_path / "x.h5", "--checkpoint", run_dir,
                          "--device", "cpu", "-q")
            assert refused.code == 2 and "unfinished cxrprobe adapt run" in refused.stderr, refused.stderr
    assert kills == KILLS
    finish("adapt", "--data-dir", data, "--out", run_dir, *ADAPT, "--resume")
    assert same_run(run_dir, reference)
    assert leftovers(run_dir) == []


@pytest.fixture(scope="module")
def fewshot_reference(synthetic_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot-ref") / "results"
    seconds = finish("fewshot", "--cache", synthetic_cache, "--out", out, *FEWSHOT)
    return out, seconds


def test_fewshot_killed_ten_times_then_rerun_gives_identical_bytes(synthetic_cache, fewshot_reference, tmp_path):
    reference, seconds = fewshot_reference
    out = tmp_path / "results"
    temporaries = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".results.tmp-")]  # noqa: E731
    # three times while the grid computes (nothing on disk yet), then as the hidden results
    # folder fills: with 0, 1, ..., 6 of its 9 files (runs, summary, per-class, paired,
    # supports, support counts, config; the two plots are drawn last)
    markers = [(lambda: True, seconds * f) for f in (0.1, 0.2, 0.3)]
    markers += [(lambda k=k: any(len(list(p.iterdir())) >= k for p in temporaries()), 0.0) for k in range(7)]
    for marker, delay in markers:
        child = start("fewshot", "--cache", synthetic_cache, "--out", out, *FEWSHOT)
        assert kill_when(child, marker, after=delay)
        assert not out.exists(), "a killed fewshot published a results dir"
    assert {p.name for p in reference.iterdir()} == {"runs.csv", "summary.csv", "per_class.csv", "paired.csv",
                                                     "supports.csv", "support_counts.csv", "config.json",
                                                     "auc_vs_shots.png", "auc_vs_labelled.png"}
    finish("fewshot", "--cache", synthetic_cache, "--out", out, *FEWSHOT)
    assert snapshot(out) == snapshot(reference)
    assert leftovers(tmp_path) == []  # the rerun swept what the killed runs left


def test_two_fewshot_runs_on_one_cache_at_once_both_succeed(synthetic_cache, fewshot_reference, tmp_path):
    reference, _ = fewshot_reference
    children = [start("fewshot", "--cache", synthetic_cache, "--out", tmp_path / name, *FEWSHOT) for name in "ab"]
    for child in children:
        result = child.wait()
        assert result.code == 0, result.stderr
    assert snapshot(tmp_path / "a") == snapshot(reference) == snapshot(tmp_path / "b")


def test_a_second_embed_onto_the_same_cache_refuses_and_corrupts_nothing(images, tmp_path):
    out = tmp_path / "cache.h5"
    # started together: whichever takes the lock first embeds, the other must refuse at once
    ends = [c.wait() for c in [start("embed", "--data-dir", images, "--out", out, *EMBED, *extra)
                               for extra in ((), ("--resume",))]]
    assert sorted(end.code for end in ends) == [0, 1], ends  # busy is not bad input: exit 1, retry later
    refused = next(end for end in ends if end.code == 1)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "another process is writing" in lines[0] and "Traceback" not in refused.stderr
    with FeatureCache(out) as cache:
        assert len(cache.table) == N_IMAGES and cache.attrs["complete"]
    assert leftovers(tmp_path) == []
