"""Shared fixtures: a real NIH folder (the bundled metadata and the real PNGs in tests/data),
generated datasets, and a CLI runner."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from cxrprobe.cli import main
from cxrprobe.data.nih import bundled_metadata_dir, load_nih_metadata
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.data.table import DatasetMetadata

REPO = Path(__file__).resolve().parents[1]
# The modules whose tests take longest start first, so that no worker is left alone with one
# at the end (pytest-xdist hands out tests in collection order).
SLOW_FIRST = ("test_crash_safety.py", "test_demo.py", "test_adapt.py", "test_resume.py", "test_bad_inputs.py",
              "test_cli_errors.py", "test_security.py", "test_sklearn_contract.py")
TEST_IMAGES = REPO / "tests" / "data" / "nih" / "images"
NIH_METADATA = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order


def metadata_bytes(folder: Path, name: str) -> bytes:
    """The content of NIH metadata file ``name`` in ``folder``, stored plain or gzipped."""
    plain = folder / name
    return plain.read_bytes() if plain.is_file() else gzip.decompress((folder / f"{name}.gz").read_bytes())


@pytest.fixture(scope="session")
def real_nih(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real NIH folder, read-only for tests: the folder CXRPROBE_NIH_DIR names when it is
    set, else the metadata bundled in the package (gzipped, as shipped) beside the six real
    PNGs of tests/data/nih."""
    if os.environ.get("CXRPROBE_NIH_DIR"):
        path = Path(os.environ["CXRPROBE_NIH_DIR"])
        if not any((path / f"Data_Entry_2017_v2020.csv{gz}").is_file() for gz in ("", ".gz")):
            pytest.fail(f"CXRPROBE_NIH_DIR={path} holds no Data_Entry_2017_v2020.csv(.gz)")
        return path
    folder = tmp_path_factory.mktemp("real-nih")
    for source in bundled_metadata_dir().glob("*.gz"):
        (folder / source.name).symlink_to(source)
    (folder / "images").symlink_to(TEST_IMAGES, target_is_directory=True)
    return folder


@pytest.fixture(scope="session")
def nih_metadata(real_nih: Path) -> DatasetMetadata:
    """The real NIH tables, parsed once per test process (1.5 s a parse)."""
    return load_nih_metadata(real_nih)


@pytest.fixture()
def nih_copy(tmp_path: Path, real_nih: Path):
    """A writable copy of the real NIH metadata (no images), uncompressed, that a test may edit."""

    def make(*names: str) -> Path:
        folder = tmp_path / "nih"
        folder.mkdir(exist_ok=True)
        for name in names or NIH_METADATA:
            (folder / name).write_bytes(metadata_bytes(real_nih, name))
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
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory, nih_metadata: DatasetMetadata) -> Path:
    """A synthetic cache over every 25th real NIH row (4,485 rows, 64-d): quick, NIH-shaped."""
    import numpy as np

    from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache

    out = tmp_path_factory.mktemp("synthetic") / "cache.h5"
    write_synthetic_cache(out, nih_metadata, np.arange(0, len(nih_metadata.table), 25), SyntheticModel(dim=64))
    return out
