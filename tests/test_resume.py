"""An interrupted embed: refused without --resume and kept; Ctrl-C stops cleanly. (Ten SIGKILLs
then a resume to identical bytes: test_crash_safety.py.)"""

from __future__ import annotations

import signal

import h5py
import numpy as np
import pytest
from processes import kill_when, run, start

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.synthetic import write_nih_folder

N_IMAGES = 120
EMBED = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--batch-size", "2",
         "--workers", "0", "-q")


@pytest.fixture(scope="module")
def real_png_dataset(real_nih, tmp_path_factory):
    """120 copies of the real NIH PNGs under generated ids: real decoding cost, known labels."""
    root = tmp_path_factory.mktemp("pngs")
    write_nih_folder(root, N_IMAGES, seed=5, png_pool=sorted((real_nih / "images").glob("*.png")))
    return root


def rows_done(partial):
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(np.count_nonzero(f["status"][()]))
    except (OSError, KeyError):
        return 0


def test_interrupted_run_without_resume_is_refused_and_kept(real_png_dataset, tmp_path):
    out = tmp_path / "c.h5"
    partial = tmp_path / "c.h5.partial"
    child = start("embed", "--data-dir", real_png_dataset, "--out", out, *EMBED)
    assert kill_when(child, lambda: partial.exists() and rows_done(partial) > 4), "it ended before the kill"
    before = partial.read_bytes()
    again = run("embed", "--data-dir", real_png_dataset, "--out", out, *EMBED)
    assert again.code == 2
    assert again.stderr.strip() == (
        "cxrprobe: error: an interrupted embed left c.h5.partial; use --resume to finish it or --force to start over"
    )
    assert partial.read_bytes() == before


def test_ctrl_c_stops_cleanly_and_resume_finishes(real_png_dataset, tmp_path):
    out = tmp_path / "c.h5"
    partial = tmp_path / "c.h5.partial"
    child = start("embed", "--data-dir", real_png_dataset, "--out", out, *EMBED)
    while child.poll() is None and not (partial.exists() and rows_done(partial) > 4):
        pass
    child.signal(signal.SIGINT)
    stopped = child.wait(60)
    assert stopped.code == 130, stopped.stderr
    assert stopped.stderr.strip().splitlines() == [
        "cxrprobe: interrupted; what was written is kept (rerun with --resume to continue)"
    ]
    assert partial.exists() and not out.exists()
    finish = run("embed", "--data-dir", real_png_dataset, "--out", out, *EMBED, "--resume")
    assert finish.code == 0, finish.stderr
    with FeatureCache(out) as cache:
        assert len(cache.table) == N_IMAGES
