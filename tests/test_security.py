"""Security: nothing from a user's files is unpickled or evaluated, names from metadata cannot
leave the data dir, and Pillow's decompression-bomb limit stays on.

Each property is checked twice where it can be: statically, over the package's source, so a
new unsafe call is caught the day it is written; and by behaviour, with hostile files.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import Evil, write_bomb_png

from cxrprobe.data.images import ImageDecodeError, Preprocessing, load_grey
from cxrprobe.data.locate import find_images
from cxrprobe.data.nih import load_nih_metadata
from cxrprobe.errors import DataError, InputError
from cxrprobe.models.weights import read_state_dict
from cxrprobe.train.adapted import load_adapted
from cxrprobe.train.checkpoint import load_checkpoint
from cxrprobe.train.pixels import open_pixel_cache

PACKAGE = Path(__file__).resolve().parents[1] / "cxrprobe"
CODE = "__import__('os').system('touch {marker}')"


# --- static: the package's own source -----------------------------------------------------------------

def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


# calls that run code or unpickle, whatever their arguments
FORBIDDEN_CALLS = {
    "eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load",
    "marshal.loads", "shelve.open", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "dill.load", "dill.loads",
    "joblib.load", "pd.read_pickle", "pandas.read_pickle", "jsonpickle.decode",
}


def unsafe_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in FORBIDDEN_CALLS:
                found.append(name)
            if name == "torch.load" and _keyword(node, "weights_only") is not True:
                found.append("torch.load without weights_only=True")
            if name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
                found.append("np.load with allow_pickle")
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in ("MAX_IMAGE_PIXELS", "LOAD_TRUNCATED_IMAGES"):
                    found.append(f"sets {target.attr}")
    return found


def test_the_checker_sees_what_it_looks_for():
    hostile = ("eval(x)\npickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
               "np.load(p, allow_pickle=True)\nImage.MAX_IMAGE_PIXELS = None\nyaml.load(s)\n")
    assert len(unsafe_calls(hostile)) == 7
    assert unsafe_calls("model.eval()\nre.compile('x')\ntorch.load(p, weights_only=True)\nnp.load(p)\n") == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_unpickles_evaluates_or_lifts_pillow_limits(path):
    assert unsafe_calls(path.read_text()) == []


# --- nothing from a user's file is unpickled ---------------------------------------------------------

def _legacy_pickle(path: Path, marker: Path, key: str) -> None:
    with open(path, "wb") as handle:
        pickle.dump({key: Evil(marker)}, handle)


def _torch_zip(path: Path, marker: Path, key: str) -> None:
    torch.save({key: Evil(marker)}, path)  # torch's zip format with the object in data.pkl


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("write", [_legacy_pickle, _torch_zip], ids=["legacy-pickle", "torch-zip"])
@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_weights_files_with_code_are_refused_without_running_it(tmp_path, write, suffix):
    marker = tmp_path / "pwned"
    write(tmp_path / f"weights{suffix}", marker, "state_dict")
    with pytest.raises(InputError, match="not a weights file that can be read safely"):
        read_state_dict(tmp_path / f"weights{suffix}")
    assert not marker.exists()


@pytest.mark.parametrize("write", [_legacy_pickle, _torch_zip], ids=["legacy-pickle", "torch-zip"])
def test_checkpoints_with_code_are_refused_without_running_it(tmp_path, write):
    marker = tmp_path / "pwned"
    write(tmp_path / "last.pt", marker, "epoch")
    with pytest.raises(InputError, match="cannot be read safely"):
        load_checkpoint(tmp_path / "last.pt")
    run = tmp_path / "run"  # a finished run dir whose best.pt carries code, given to embed --checkpoint
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "cxrprobe-tiny", "pretrained": "none"}))
    (run / "summary.json").write_text("{}")
    write(run / "best.pt", marker, "visual")
    with pytest.raises(InputError, match="cannot be read safely"):
        load_adapted(run, "cpu")
    assert not marker.exists()


def test_a_pixel_cache_of_objects_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    objects = np.empty(2, dtype=object)
    objects[:] = [Evil(marker), Evil(marker)]
    np.save(tmp_path / "pixels-train.npy", objects, allow_pickle=True)
    with pytest.raises(InputError, match="is not a pixel cache"):
        open_pixel_cache(tmp_path / "pixels-train.npy")
    assert not marker.exists()


# --- names from metadata stay inside the data dir -----------------------------------------------------

CLIMBING_NAMES = [
    "../../etc/passwd", "/etc/passwd", "images/../../../etc/passwd", "..", "../x.png", "a/b.png", "a\\b.png",
    "~/x.png", "%2e%2e%2fpasswd", "x.png\x00/etc/passwd", "C:\\Windows\\win.ini", " /etc/passwd",
]


@pytest.mark.parametrize("name", CLIMBING_NAMES, ids=repr)
def test_metadata_names_that_could_leave_the_data_dir_are_refused(tmp_path, small_dataset, name):
    for file in ("Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"):
        shutil.copyfile(small_dataset / file, tmp_path / file)
    table = (tmp_path / "Data_Entry_2017_v2020.csv").read_text()
    first = table.splitlines()[1].split(",")[0]
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text(table.replace(first, f'"{name}"', 1))  # quoted: any text
    with pytest.raises(DataError, match="not a plain file name"):
        load_nih_metadata(tmp_path)


def test_image_lookup_only_matches_file_names_under_the_data_dir(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "images").mkdir(parents=True)
    outside.mkdir()
    (data / "images" / "inside.png").write_bytes(b"x")
    (outside / "secret.png").write_bytes(b"x")
    names = np.array(["inside.png", "secret.png", "../outside/secret.png", str(outside / "secret.png"),
                      "images/inside.png", "../data/images/inside.png"])
    paths = find_images(data, names)
    assert paths.tolist() == [str(data / "images" / "inside.png"), "", "", "", "", ""]


# --- nothing read from HDF5 is evaluated --------------------------------------------------------------

def test_strings_in_a_cache_are_read_as_data_never_run(tmp_path, synthetic_cache, cli):
    """Code in every string a cache holds: attributes, ids, prompts, failure reasons. Reading
    the cache (info, zero-shot, few-shot) shows the strings as they are and runs none."""
    marker = tmp_path / "pwned"
    code = CODE.format(marker=marker)
    cache = tmp_path / "cache.h5"
    shutil.copyfile(synthetic_cache, cache)
    with h5py.File(cache, "a") as f:
        for name in ("model", "pretrained", "dataset", "label_source", "created"):
            f.attrs[name] = code
        f.attrs["versions"] = json.dumps({"cxrprobe": code})
        ids = f["image_id"].asstr()[()]
        del f["image_id"]
        f["image_id"] = np.array([code + f"#{i}" for i in range(len(ids))], dtype=h5py.string_dtype())
        prompts = f["text/prompt"].asstr()[()]
        del f["text/prompt"]
        f["text/prompt"] = np.array([code] * len(prompts), dtype=h5py.string_dtype())
        del f["failures"]
        f["failures/image_id"] = np.array([code], dtype=h5py.string_dtype())
        f["failures/reason"] = np.array([code], dtype=h5py.string_dtype())
    shown = cli("info", cache, "--json")
    assert shown.code == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["model"] == code and summary["failures"] == [{"image_id": code, "reason": code}]
    assert cli("info", cache).code == 0
    assert cli("zeroshot", "--cache", cache, "--out", tmp_path / "zs", "--bootstrap", "10").code == 0
    assert cli("fewshot", "--cache", cache, "--out", tmp_path / "fs", "--shots", "1", "--seeds", "1",
               "--heads", "prototype", "-q").code == 0
    assert not marker.exists()


# --- Pillow's decompression-bomb limit stays on ------------------------------------------------------

def test_importing_every_cxrprobe_module_leaves_pillow_limits_as_they_were():
    script = """
import importlib, pkgutil
from PIL import Image, ImageFile
before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
import cxrprobe
for module in pkgutil.walk_packages(cxrprobe.__path__, "cxrprobe."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)
print(before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES), Image.MAX_IMAGE_PIXELS)
"""
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    same, limit = process.stdout.split()
    assert same == "True" and limit != "None" and int(limit) > 0, process.stdout + process.stderr


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    write_bomb_png(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 100_000  # 400 million pixels in under 100 KB
    with pytest.raises(ImageDecodeError, match="refused as a decompression bomb"):
        load_grey(str(tmp_path / "bomb.png"), Preprocessing())
