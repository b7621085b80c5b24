"""Bad input to `embed` and `info`: one line on stderr, a non-zero exit, and nothing on disk changed."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from unittest import mock

import h5py
import pytest
import torch
from conftest import TINY
from helpers import Evil, assert_one_line_error, snapshot
from safetensors.torch import save_file

from cxrprobe.models.loading import load_model


@pytest.fixture()
def workspace(tmp_path, small_dataset, cli):
    """A folder holding a finished tiny cache, a copy of the data, and assorted files."""
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    cache = tmp_path / "cache.h5"
    assert cli("embed", "--data-dir", data, "--out", cache, *TINY, "--workers", "0", "-q").code == 0
    (tmp_path / "notes.txt").write_text("not weights\n")
    return tmp_path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_embed_inputs_fail_cleanly_and_touch_nothing(workspace, cli):
    data, cache = workspace / "data", workspace / "cache.h5"
    marker = workspace / "pwned"
    with open(workspace / "evil.pt", "wb") as handle:
        pickle.dump({"state_dict": Evil(str(marker))}, handle)
    other = load_model("ViT-B-32", "none").model.state_dict()
    save_file({k: v.contiguous() for k, v in list(other.items())[:5]}, str(workspace / "vitb32-part.safetensors"))
    cases = [
        (("--data-dir", workspace / "absent", "--out", workspace / "x.h5", *TINY), "does not exist"),
        (("--data-dir", workspace / "data" / "images", "--out", workspace / "x.h5", *TINY), "no NIH metadata"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--model", "ViT-B-33", "--pretrained", "none"),
         "unknown model 'ViT-B-33'; did you mean ViT-B-32"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--model", "cxrprobe-tiny", "--pretrained",
          workspace / "nope.safetensors"), "does not exist"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--model", "cxrprobe-tiny", "--pretrained",
          workspace / "notes.txt"), "is not a weights file that can be read safely"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--model", "cxrprobe-tiny", "--pretrained",
          workspace / "evil.pt"), "is not a weights file that can be read safely"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--model", "cxrprobe-tiny", "--pretrained",
          workspace / "vitb32-part.safetensors"), "is not a cxrprobe-tiny checkpoint"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--model", "ViT-B-32", "--pretrained", "openai-v9"),
         "unknown pretrained tag 'openai-v9'"),
        (("--data-dir", data, "--out", workspace / "missing" / "x.h5", *TINY), "folder"),
        (("--data-dir", data, "--out", workspace / "data", *TINY), "is a folder"),
        (("--data-dir", data, "--out", cache, *TINY), "already a complete cache; use --resume"),
        (("--data-dir", data, "--out", workspace / "notes.txt", *TINY), "is not a cxrprobe cache; use --force"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--precision", "fp16"), "fp16 needs a CUDA device"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--precision", "fp8"), "unknown precision"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--batch-size", "0"), "--batch-size must be at least 1"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--limit", "0"), "--limit must be at least 1"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--dtype", "int8"), "unknown embedding dtype"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--val-fraction", "1.5"), "validation fraction"),
        (("--data-dir", data, "--out", workspace / "x.h5", *TINY, "--resume", "--force"), "exclude each other"),
        (("--data-dir", data, "--out", workspace / "x.h5", "--batch-size", "many"), "Invalid value for '--batch-size'"),
    ]
    cases.append(((  # on any machine: torch is told it has no GPU
        "--data-dir", data, "--out", workspace / "x.h5", "--model", "cxrprobe-tiny", "--pretrained", "none",
        "--device", "cuda"), "no CUDA device"))
    before = snapshot(workspace)
    for args, message in cases:
        with mock.patch.object(torch.cuda, "is_available", lambda: False):
            assert_one_line_error(cli("embed", *args), message)
    assert snapshot(workspace) == before
    assert not marker.exists()


def test_resume_onto_a_cache_of_another_model_is_refused(workspace, cli):
    before = snapshot(workspace)
    result = cli("embed", "--data-dir", workspace / "data", "--out", workspace / "cache.h5",
                 "--model", "ViT-B-32", "--pretrained", "none", "--device", "cpu", "--resume")
    assert_one_line_error(result, "was written by another run (model is 'cxrprobe-tiny' there but 'ViT-B-32' here)")
    assert snapshot(workspace) == before


def test_resume_with_other_weights_of_the_same_model_is_refused(workspace, cli):
    state = load_model("cxrprobe-tiny", "none").model.state_dict()
    save_file({k: (v + 1).contiguous() for k, v in state.items()}, str(workspace / "shifted.safetensors"))
    before = snapshot(workspace)
    result = cli("embed", "--data-dir", workspace / "data", "--out", workspace / "cache.h5",
                 "--model", "cxrprobe-tiny", "--pretrained", workspace / "shifted.safetensors", "--resume")
    assert_one_line_error(result, "weights differ")
    assert snapshot(workspace) == before


def test_default_weights_without_network_name_the_alternatives(workspace):
    """Run as a user would, in a subprocess with no reachable hub and an empty HF cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workspace / "hf-home")}
    before = snapshot(workspace)
    process = subprocess.run(
        [sys.executable, "-m", "cxrprobe", "embed", "--data-dir", str(workspace / "data"),
         "--out", str(workspace / "x.h5"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2 and len(lines) == 1, process.stderr
    assert "cannot get the 'openai' weights for ViT-B-32" in lines[0]
    assert "--pretrained FILE" in lines[0] and "--pretrained none" in lines[0]
    assert snapshot(workspace) == before


def test_bad_info_inputs(workspace, cli):
    (workspace / "image.png").write_bytes((workspace / "data" / "images").glob("*.png").__next__().read_bytes())
    with h5py.File(workspace / "foreign.h5", "w") as f:
        f["x"] = [1, 2, 3]
    with h5py.File(workspace / "future.h5", "w") as f:
        f.attrs["format"] = "cxrprobe-cache"
        f.attrs["format_version"] = 99
    raw = (workspace / "cache.h5").read_bytes()
    (workspace / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    cases = [
        (workspace / "absent.h5", "no cache at"),
        (workspace / "image.png", "not a readable HDF5 file"),
        (workspace / "foreign.h5", "not a cxrprobe cache"),
        (workspace / "future.h5", "format version 99"),
        (workspace / "truncated.h5", "not a readable HDF5 file"),
        (workspace / "data", "is a folder"),
    ]
    before = snapshot(workspace)
    for path, message in cases:
        assert_one_line_error(cli("info", path), message)
    assert snapshot(workspace) == before


def test_usage_errors_are_one_line_with_exit_2(cli):
    assert_one_line_error(cli("embed"), "Missing option")
    assert_one_line_error(cli("bogus"), "No such command 'bogus'")
    assert_one_line_error(cli("info"), "Missing argument")


def test_python_dash_m_and_help_work():
    process = subprocess.run([sys.executable, "-m", "cxrprobe", "--help"], capture_output=True, text=True)
    assert process.returncode == 0 and "embed" in process.stdout and "info" in process.stdout
