"""Shared fixtures: the real NIH files from shared/, generated datasets, and a CLI runner."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from cxrprobe.cli import main
from cxrprobe.data.synthetic import write_nih_folder

REPO = Path(__file__).resolve().parents[1]
NIH_METADATA = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")


def nih_dir() -> Path:
    """The real NIH metadata and 40 PNGs (shared/data/nih beside the checkout)."""
    path = Path(os.environ.get("CXRPROBE_NIH_DIR", REPO.parent / "shared" / "data" / "nih"))
    if not (path / "Data_Entry_2017_v2020.csv").is_file():
        pytest.fail(f"the real NIH files are not at {path}; set CXRPROBE_NIH_DIR")
    return path


@pytest.fixture(scope="session")
def real_nih() -> Path:
    return nih_dir()


@pytest.fixture()
def nih_copy(tmp_path: Path, real_nih: Path):
    """A writable copy of the real NIH metadata (no images) that a test may edit."""

    def make(*names: str) -> Path:
        folder = tmp_path / "nih"
        folder.mkdir(exist_ok=True)
        for name in names or NIH_METADATA:
            shutil.copyfile(real_nih / name, folder / name)
        return folder

    return make


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 generated 128 px images in the flat NIH layout; read-only for tests."""
    root = tmp_path_factory.mktemp("small")
    write_nih_folder(root, 24, seed=3, image_size=128)
    return root


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the real CLI entry point in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


TINY = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu")


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic cache over every 25th real NIH row (4,485 rows, 64-d): quick, NIH-shaped."""
    import numpy as np

    from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache
    from cxrprobe.data.nih import load_nih_metadata

    meta = load_nih_metadata(nih_dir())
    table = meta.table.take(np.arange(0, len(meta.table), 25))
    out = tmp_path_factory.mktemp("synthetic") / "cache.h5"
    write_synthetic_cache(out, table, meta.label_source, meta.val_fraction, meta.val_seed, SyntheticModel(dim=64))
    return out
