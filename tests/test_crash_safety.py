"""SIGKILL at ten random points each of embed, adapt and fewshot (real subprocesses): after
every kill nothing reads as complete that is not, and the resume or rerun that follows writes
the very bytes of an uninterrupted run, leaving no temporary behind. Two runs at once: two
fewshot runs on one cache both succeed; a second embed onto the same cache refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.errors import CacheError
from helpers import snapshot
from test_resume import embed_command, rows_done

KILLS = 10
ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "HF_HUB_OFFLINE": "1"}
ADAPT = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--unfreeze", "1",
         "--batch-size", "16", "--epochs", "8", "-q")


def cxrprobe(*args: object) -> list[str]:
    return [sys.executable, "-m", "cxrprobe", *map(str, args)]


def kill_after(command: list[str], seconds: float, until=lambda: False) -> bool:
    """Run ``command``; SIGKILL it after ``seconds`` or as soon as ``until()`` holds. True if
    it was killed, False if it ended first (then it must have succeeded)."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline and not until():
        time.sleep(0.005)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
    assert process.returncode == 0, process.stderr.read().decode()
    return False


def finish(command: list[str]) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def timed(command: list[str]) -> float:
    start = time.monotonic()
    finish(command)
    return time.monotonic() - start


def same_run(run: Path, reference: Path) -> bool:
    """Two adapt run dirs hold the same bytes, but for the output path config.json records."""
    config = [{k: v for k, v in json.loads((d / "config.json").read_text()).items() if k != "out"} for d in (run, reference)]
    files = [{k: v for k, v in snapshot(d).items() if k.name != "config.json"} for d in (run, reference)]
    return config[0] == config[1] and files[0] == files[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def images(real_nih, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-images")
    write_nih_folder(root, 60, seed=11, png_pool=sorted((real_nih / "images").glob("*.png")))
    return root


def test_embed_killed_ten_times_resumes_to_identical_bytes(images, tmp_path):
    reference = tmp_path / "reference.h5"
    finish(embed_command(images, reference))
    out, partial = tmp_path / "cache.h5", tmp_path / "cache.h5.partial"
    rng = np.random.default_rng(0)
    # a few kills by time (model loading, metadata, the first rows), the rest at random rows
    thresholds = [None] * 3 + sorted(rng.choice(np.arange(2, 58), KILLS - 3, replace=False).tolist())
    kills = 0
    for threshold in thresholds:
        command = embed_command(images, out, "--resume")
        if threshold is None:
            killed = kill_after(command, rng.uniform(0.2, 2.5))
        else:
            killed = kill_after(command, 120, until=lambda t=threshold: partial.exists() and rows_done(partial) > t)
        kills += killed
        assert not out.exists(), "a killed embed left a file under the final name"
        if partial.exists():
            with pytest.raises(CacheError, match="not complete"):
                FeatureCache(partial)
    assert kills == KILLS
    finish(embed_command(images, out, "--resume"))
    assert out.read_bytes() == reference.read_bytes()
    assert not partial.exists() and leftovers(tmp_path) == []


def test_adapt_killed_ten_times_resumes_to_identical_bytes(tmp_path):
    data = tmp_path / "data"
    write_nih_folder(data, 60, seed=2, image_size=96, test_fraction=0.2)
    reference = tmp_path / "reference"
    total = timed(cxrprobe("adapt", "--data-dir", data, "--out", reference, *ADAPT))
    assert (reference / "summary.json").is_file()
    rng = np.random.default_rng(1)
    kills, attempts, runs = 0, 0, [tmp_path / "run0"]
    while kills < KILLS and attempts < 40:
        attempts += 1
        run = runs[-1]
        command = cxrprobe("adapt", "--data-dir", data, "--out", run, *ADAPT, "--resume")
        killed = kill_after(command, rng.uniform(0.3, total))
        if (run / "summary.json").exists():  # it ended (the kill, if any, came after): it is whole
            assert same_run(run, reference) and leftovers(run) == []
            runs.append(tmp_path / f"run{len(runs)}")  # place the remaining kills in a fresh run
        elif killed:
            kills += 1
            if (run / "best.pt").is_file():  # unfinished, and nothing downstream takes it for done
                refused = subprocess.run(cxrprobe("embed", "--data-dir", data, "--out", tmp_path / "x.h5",
                                                  "--checkpoint", run, "--device", "cpu", "-q"),
                                         env=ENV, capture_output=True, text=True)
                assert refused.returncode == 2 and "unfinished cxrprobe adapt run" in refused.stderr, refused.stderr
    assert kills == KILLS
    finish(cxrprobe("adapt", "--data-dir", data, "--out", runs[-1], *ADAPT, "--resume"))
    assert same_run(runs[-1], reference)
    assert leftovers(runs[-1]) == []


@pytest.fixture(scope="module")
def fewshot_reference(synthetic_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot-ref") / "results"
    seconds = timed(cxrprobe("fewshot", "--cache", synthetic_cache, "--out", out, *FEWSHOT))
    return out, seconds


FEWSHOT = ("--shots", "1,4", "--seeds", "2", "--heads", "logreg,prototype,knn,zeroshot", "-q")


def test_fewshot_killed_ten_times_then_rerun_gives_identical_bytes(synthetic_cache, fewshot_reference, tmp_path):
    reference, seconds = fewshot_reference
    out = tmp_path / "results"
    rng = np.random.default_rng(2)
    for delay in sorted(rng.uniform(0.3, seconds, KILLS)):
        killed = kill_after(cxrprobe("fewshot", "--cache", synthetic_cache, "--out", out, *FEWSHOT), delay)
        if out.exists():  # the rename happened (killed after it, or not killed): then it is whole
            assert snapshot(out) == snapshot(reference)
            os.rename(out, tmp_path / f"done-{delay:.3f}")  # keep the chain of kills going
        else:
            assert killed
        assert [p for p in leftovers(tmp_path) if not p.startswith(".results.tmp-")] == []
    finish(cxrprobe("fewshot", "--cache", synthetic_cache, "--out", out, *FEWSHOT))
    assert snapshot(out) == snapshot(reference)
    assert leftovers(tmp_path) == []  # the rerun swept what the killed runs left


def test_two_fewshot_runs_on_one_cache_at_once_both_succeed(synthetic_cache, fewshot_reference, tmp_path):
    reference, _ = fewshot_reference
    runs = [subprocess.Popen(cxrprobe("fewshot", "--cache", synthetic_cache, "--out", tmp_path / name, *FEWSHOT),
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    for process in runs:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
    assert snapshot(tmp_path / "a") == snapshot(reference) == snapshot(tmp_path / "b")


def test_a_second_embed_onto_the_same_cache_refuses_and_corrupts_nothing(images, tmp_path):
    out = tmp_path / "cache.h5"
    # started together: whichever takes the lock first embeds, the other must refuse at once
    both = [subprocess.Popen(embed_command(images, out, *extra), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for extra in ((), ("--resume",))]
    ends = [process.communicate(timeout=300) + (process.returncode,) for process in both]
    assert sorted(code for _, _, code in ends) == [0, 1], ends  # busy is not bad input: exit 1, retry later
    _, stderr, _ = next(end for end in ends if end[2] == 1)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "another process is writing" in lines[0] and "Traceback" not in stderr
    with FeatureCache(out) as cache:
        assert len(cache.table) == 60 and cache.attrs["complete"]
    assert leftovers(tmp_path) == []
