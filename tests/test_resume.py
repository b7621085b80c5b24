"""An interrupted embed: refused without --resume and kept; Ctrl-C stops cleanly. (Ten SIGKILLs
then a resume to identical bytes: test_crash_safety.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.synthetic import write_nih_folder

N_IMAGES = 120


@pytest.fixture(scope="module")
def real_png_dataset(real_nih, tmp_path_factory):
    """120 copies of the real NIH PNGs under generated ids: real decoding cost, known labels."""
    root = tmp_path_factory.mktemp("pngs")
    write_nih_folder(root, N_IMAGES, seed=5, png_pool=sorted((real_nih / "images").glob("*.png")))
    return root


def embed_command(data, out, *extra):
    return [
        sys.executable, "-m", "cxrprobe", "embed", "--data-dir", str(data), "--out", str(out),
        "--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu",
        "--batch-size", "2", "--workers", "0", "-q", *extra,
    ]


def rows_done(partial):
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(np.count_nonzero(f["status"][()]))
    except (OSError, KeyError):
        return 0


def kill_midway(command, partial, env, at_least):
    """Start the embed and SIGKILL it once more than ``at_least`` rows are committed."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if partial.exists() and rows_done(partial) > at_least:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def test_interrupted_run_without_resume_is_refused_and_kept(real_png_dataset, tmp_path):
    out = tmp_path / "c.h5"
    partial = tmp_path / "c.h5.partial"
    kill_midway(embed_command(real_png_dataset, out), partial, dict(os.environ), at_least=4)
    before = partial.read_bytes()
    again = subprocess.run(embed_command(real_png_dataset, out), capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "cxrprobe: error: an interrupted embed left c.h5.partial; use --resume to finish it or --force to start over"
    )
    assert partial.read_bytes() == before


def test_ctrl_c_stops_cleanly_and_resume_finishes(real_png_dataset, tmp_path):
    out = tmp_path / "c.h5"
    partial = tmp_path / "c.h5.partial"
    process = subprocess.Popen(embed_command(real_png_dataset, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not (partial.exists() and rows_done(partial) > 4):
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "cxrprobe: interrupted; what was written is kept (rerun with --resume to continue)"
    ]
    assert partial.exists() and not out.exists()
    finish = subprocess.run(embed_command(real_png_dataset, out, "--resume"), capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    with FeatureCache(out) as cache:
        assert len(cache.table) == N_IMAGES
