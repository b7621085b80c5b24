"""Bad input to every command, run as a user runs it: the real CLI entry point, in this process
(its working directory the workspace), or in a real child process where the case needs one: a
full disk (a mount namespace of its own), a file size limit, or root without its power to read
anything (processes.py).

Each case must end with its exit status (2 for input errors, 1 where the run itself failed,
e.g. a full disk), exactly one stderr line "cxrprobe: error: ..." naming the problem, no
traceback and no warning, and the workspace byte for byte as it was: no file changed, added or
removed. The workspace is built once for the module; every case runs against it and changes
nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import os
import pickle
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import Evil, assert_one_line_error, snapshot, write_bomb_png
from PIL import Image
from processes import (
    MOUNT_FAILED,
    FileSizeLimit,
    FullDisk,
    NoFileAccessOverride,
    can_mount_tmpfs,
    file_modes_bind_root,
    run,
)

from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache
from cxrprobe.commands.embed import EmbedOptions, embed
from cxrprobe.commands.fewshot import run_fewshot
from cxrprobe.data.nih import load_nih_metadata

COMMANDS = ("embed", "info", "fewshot", "zeroshot", "report", "adapt", "demo", "heads")
EMBED = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--workers", "0", "-q")
ADAPT = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--unfreeze", "1",
         "--epochs", "1", "--batch-size", "8", "-q")
GRID = ("--shots", "1", "--seeds", "1", "--heads", "prototype")
MARKER = "pwned"  # what unpickling any Evil in the workspace would create


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # paths relative to the workspace, where the CLI runs
    phrase: str  # what the one error line must say
    code: int = 2
    setting: str = "plain"  # or "full-disk", "file-size-limit", "no-root-override"


def embed_(*extra: str, data: str = "data", out: str = "new.h5") -> tuple[str, ...]:
    return ("embed", "--data-dir", data, "--out", out, *EMBED, *extra)


def fewshot_(*extra: str, cache: str = "nih.h5", out: str = "new") -> tuple[str, ...]:
    return ("fewshot", "--cache", cache, "--out", out, *extra)


def zeroshot_(*extra: str, cache: str = "nih.h5", out: str = "new") -> tuple[str, ...]:
    return ("zeroshot", "--cache", cache, "--out", out, *extra)


def adapt_(*extra: str, data: str = "data", out: str = "new") -> tuple[str, ...]:
    return ("adapt", "--data-dir", data, "--out", out, *ADAPT, *extra)


CASES = [
    # embed: options, the data dir and its metadata, the output, weights, a working file, the disk
    Case("embed-batch-size-not-a-number", embed_("--batch-size", "many"), "Invalid value for '--batch-size'"),
    Case("embed-workers-negative", embed_("--workers", "-1"), "--workers must be 0 or more, got -1"),
    Case("embed-data-dir-missing", embed_(data="absent"), "does not exist"),
    Case("embed-metadata-empty-file", embed_(data="meta-empty"), "is empty"),
    Case("embed-metadata-missing-column", embed_(data="meta-no-patient-column"), "lacks column(s) Patient ID"),
    Case("embed-metadata-unknown-label", embed_(data="meta-unknown-label"), "unknown label 'Covid-19'"),
    Case("embed-metadata-duplicate-ids", embed_(data="meta-duplicate-id"), "more than once"),
    Case("embed-metadata-name-climbs-out", embed_(data="meta-climbs-out"),
         "'../../etc/passwd' is not a plain file name"),
    Case("embed-metadata-not-utf8", embed_(data="meta-latin1"), "is not UTF-8"),
    Case("embed-metadata-patient-not-a-number", embed_(data="meta-bad-patient"), "patient id 'P17' is not a number"),
    Case("embed-split-list-missing", embed_(data="meta-no-test-list"), "no test_list.txt"),
    Case("embed-metadata-gzip-truncated", embed_(data="meta-gzip-truncated"), "is not a readable gzip file"),
    Case("embed-metadata-unreadable", embed_(data="meta-unreadable"), "cannot read", setting="no-root-override"),
    Case("embed-no-image-files", embed_(data="meta-only"), "none of the 24 images"),
    Case("embed-out-is-a-png", embed_(out="image.png"), "is not a cxrprobe cache; use --force"),
    Case("embed-out-under-a-file", embed_(out="notes.txt/new.h5"), "notes.txt is a file, not a folder"),
    Case("embed-weights-malicious-pickle", embed_("--pretrained", "evil.pt"),
         "not a weights file that can be read safely"),
    Case("embed-weights-empty-safetensors", embed_("--pretrained", "empty.safetensors"),
         "not a weights file that can be read safely"),
    Case("embed-checkpoint-config-not-json", embed_("--checkpoint", "ck-bad-config"), "cannot be read as JSON"),
    Case("embed-resume-truncated-working-file", embed_("--resume", out="resume-me.h5"),
         "cannot be opened as a working file"),
    Case("embed-full-disk", embed_(out="full/new.h5"), "No space left on device; free some space", 1, "full-disk"),
    Case("embed-file-size-limit", embed_(), "File too large; raise the file size limit", 1, "file-size-limit"),
    # info: whatever file is given as a cache
    Case("info-missing-file", ("info", "absent.h5"), "no cache at"),
    Case("info-png-as-cache", ("info", "image.png"), "not a readable HDF5 file"),
    Case("info-hdf5-of-another-program", ("info", "foreign.h5"), "not a cxrprobe cache"),
    Case("info-other-format-version", ("info", "old-format.h5"), "format version 0; this cxrprobe reads versions 1, 2"),
    Case("info-truncated-hdf5", ("info", "truncated.h5"), "not a readable HDF5 file"),
    Case("info-zero-byte-file", ("info", "empty.h5"), "not a readable HDF5 file"),
    Case("info-cache-without-datasets", ("info", "hollow.h5"), "is damaged: it has no 'image_id' dataset"),
    Case("info-attribute-with-code", ("info", "code-attr.h5"), "'preprocessing' attribute is not a JSON object"),
    Case("info-folder-as-cache", ("info", "data"), "is a folder"),
    Case("info-unreadable-cache", ("info", "unreadable.h5"), "is not readable", setting="no-root-override"),
    Case("info-unknown-option", ("info", "tiny.h5", "--jsn"), "No such option: --jsn"),
    # fewshot: option text, the cache's content, the results dir
    Case("fewshot-shots-empty-item", fewshot_("--shots", "1,,2"), "--shots takes"),
    Case("fewshot-unknown-head", fewshot_("--heads", "logreg,bogus"), "unknown head 'bogus'"),
    Case("fewshot-jobs-zero", fewshot_(*GRID, "--jobs", "0"), "--jobs must be at least 1"),
    Case("fewshot-seeds-zero", fewshot_("--seeds", "0"), "--seeds must be at least 1"),
    Case("fewshot-unknown-support-design", fewshot_(*GRID, "--support", "balanced"), "--support must be one of"),
    Case("fewshot-normals-not-a-count", fewshot_(*GRID, "--normals", "half"), "--normals takes N, natural"),
    Case("fewshot-paper-protocol-without-head", fewshot_("--protocol", "paper"), "does not hold"),
    Case("fewshot-nan-embeddings", fewshot_(*GRID, cache="nan.h5"), "NaN or Inf embeddings"),
    Case("fewshot-inf-embeddings", fewshot_(*GRID, cache="inf.h5"), "NaN or Inf embeddings"),
    Case("fewshot-no-test-positives-at-all", fewshot_(*GRID, cache="no-positives.h5"),
         "no finding has both positive and negative test images"),
    Case("fewshot-no-test-positives-for-one-finding", fewshot_(*GRID, cache="no-hernia.h5"),
         "no AUC is defined for Hernia"),
    Case("zeroshot-no-test-positives-for-one-finding", zeroshot_(cache="no-hernia.h5"),
         "pass --allow-undefined"),
    Case("fewshot-incomplete-cache", fewshot_(*GRID, cache="incomplete.h5"), "is not complete"),
    Case("fewshot-test-cache-of-other-weights", fewshot_(*GRID, "--test-cache", "tiny.h5"),
         "was embedded with other weights than nih.h5"),
    Case("fewshot-class-map-unknown-class", fewshot_(*GRID, "--test-cache", "nih.h5", "--class-map", "map-dragon.csv"),
         "names 'Dragon', which is no class of the support cache"),
    Case("fewshot-class-map-alone", fewshot_(*GRID, "--class-map", "map-dragon.csv"),
         "--class-map goes with --test-cache or --test-labels"),
    Case("fewshot-test-labels-of-no-test-image", fewshot_(*GRID, "--test-labels", "labels-elsewhere.csv"),
         "none of the 2 images of --test-labels labels-elsewhere.csv is a test image of nih.h5"),
    Case("fewshot-cache-is-a-folder", fewshot_(*GRID, cache="data"), "data is a folder, not a cache file"),
    Case("fewshot-strict-shots-unmet", fewshot_("--shots", "4", "--seeds", "1", "--heads", "prototype",
                                                "--strict-shots"),
         "fewer than 4 shots"),
    Case("fewshot-out-not-empty", fewshot_(*GRID, out="nonempty"), "is not an empty folder"),
    Case("fewshot-out-read-only", fewshot_(*GRID, out="readonly/new"), "folder readonly is not writable",
         setting="no-root-override"),
    Case("fewshot-full-disk", fewshot_(*GRID, out="full/new"), "No space left on device", 1, "full-disk"),
    # zeroshot: its options, a prompts file, a cache without text
    Case("zeroshot-unknown-negative", zeroshot_("--negative", "bogus"), "--negative must be one of"),
    Case("zeroshot-too-few-resamples", zeroshot_("--bootstrap", "0"), "--bootstrap must be at least 10 resamples"),
    Case("zeroshot-prompts-not-json", zeroshot_("--prompts", "prompts-bad.json"), "is not valid JSON"),
    Case("zeroshot-prompts-unknown-finding", zeroshot_("--prompts", "prompts-covid.json"),
         "unknown finding 'Covid-19'"),
    Case("zeroshot-prompts-model-not-rebuildable", zeroshot_("--prompts", "prompts-ok.json"),
         "cannot rebuild the cache's model"),
    Case("zeroshot-cache-without-text", zeroshot_(cache="no-text.h5"), "holds no text embeddings"),
    Case("zeroshot-out-under-a-file", zeroshot_(out="notes.txt/new"), "notes.txt is a file, not a folder"),
    # report: results dirs and the plot
    Case("report-missing-dir", ("report", "absent"), "is not a cxrprobe results dir"),
    Case("report-summary-garbage", ("report", "results-garbage"), "holds no results"),
    Case("report-config-not-json", ("report", "results-bad-config"), "is malformed"),
    Case("report-summary-short-row", ("report", "results-short-row"), "is malformed"),
    Case("report-plot-not-png", ("report", "results", "--plot", "curves.txt"), "--plot must name a .png file"),
    Case("report-plot-under-a-file", ("report", "results", "--plot", "notes.txt/curves.png"),
         "notes.txt is a file, not a folder"),
    Case("report-plot-read-only", ("report", "results", "--plot", "readonly/curves.png"),
         "folder readonly is not writable", setting="no-root-override"),
    Case("report-plot-full-disk", ("report", "results", "--plot", "full/curves.png"), "No space left on device", 1,
         "full-disk"),
    # adapt: options, a run dir to resume, the training images, the output
    Case("adapt-epochs-not-a-number", ("adapt", "--data-dir", "data", "--out", "new", "--epochs", "ten"),
         "Invalid value for '--epochs'"),
    Case("adapt-batch-size-zero", adapt_("--batch-size", "0"), "--epochs and --batch-size must be at least 1"),
    Case("adapt-unknown-hold-out", adapt_("--hold-out", "Hernia,Covid-19"), "unknown finding 'Covid-19' in --hold-out"),
    Case("adapt-resume-config-not-json", adapt_("--resume", out="run-bad-config"), "cannot be read as JSON"),
    Case("adapt-resume-on-another-number-of-processes", adapt_("--resume", out="run-two-processes"),
         "was trained by 2 process(es), not 1: resume it with as many (torchrun --nproc-per-node 2)"),
    Case("adapt-resume-malicious-checkpoint", adapt_("--resume", out="run-evil"), "cannot be read safely"),
    Case("adapt-resume-pickled-pixel-cache", adapt_("--resume", out="run-pickled-pixels"), "is not a pixel cache"),
    Case("adapt-decompression-bomb-in-training", adapt_(data="bomb-data"), "refused as a decompression bomb"),
    Case("adapt-out-under-a-file", adapt_(out="notes.txt/run"), "notes.txt is a file, not a folder"),
    Case("adapt-full-disk", adapt_(out="full/run"), "No space left on device", 1, "full-disk"),
    # demo and the command line itself
    Case("demo-out-not-empty", ("demo", "--out", "nonempty", "-q"), "exists and is not empty"),
    Case("demo-out-under-a-file", ("demo", "--out", "notes.txt/demo", "-q"), "notes.txt is a file, not a folder"),
    Case("demo-jobs-zero", ("demo", "--out", "new", "--jobs", "0", "-q"), "--jobs must be at least 1"),
    Case("demo-jobs-not-a-number", ("demo", "--out", "new", "--jobs", "two"), "Invalid value for '--jobs'"),
    Case("heads-unknown-option", ("heads", "--csv"), "No such option: --csv"),
    Case("heads-extra-argument", ("heads", "logreg"), "Got unexpected extra argument"),
    Case("unknown-command", ("frobnicate",), "No such command 'frobnicate'"),
]


def test_the_matrix_spans_every_command_with_86_distinct_inputs():
    assert len({case.name for case in CASES}) == len(CASES) >= 86
    assert {case.args[0] for case in CASES} >= set(COMMANDS)


@pytest.fixture()
def as_a_user(cli, workspace, monkeypatch):
    """The CLI entry point in this process, from the workspace, as a user's shell would run it.
    Warnings that a fresh interpreter would print count as stderr lines."""

    def run_here(*args: str):  # noqa: ANN202
        monkeypatch.chdir(workspace)
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        monkeypatch.delenv("CXRPROBE_DEBUG", raising=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            result = cli(*args)
        shown = [w for w in caught if not issubclass(w.category, HIDDEN_BY_DEFAULT)]
        stray = "".join(f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}\n" for w in shown)
        return dataclasses.replace(result, stderr=result.stderr + stray)

    return run_here


# What a fresh interpreter's default filters do not print.
HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_ends_in_one_line_and_changes_nothing(case, workspace, tmp_path, as_a_user):
    limits = []
    if case.setting == "full-disk":
        if not can_mount_tmpfs():
            pytest.skip("no tmpfs can be mounted here (file-size-limit cases simulate a full disk)")
        limits = [FullDisk(str(workspace / "full"), str(tmp_path / "left-on-disk.txt"))]
    elif case.setting == "file-size-limit":
        limits = [FileSizeLimit(16 * 1024)]
    elif case.setting == "no-root-override":
        if not file_modes_bind_root():
            pytest.skip("file modes cannot be made to bind here")
        limits = [NoFileAccessOverride()]
    before = snapshot(workspace)
    result = run(*case.args, cwd=workspace, limits=limits) if limits else as_a_user(*case.args)
    assert result.code != MOUNT_FAILED or case.setting != "full-disk", result.stderr
    assert_one_line_error(result, case.phrase, case.code)
    assert snapshot(workspace) == before
    if case.setting == "full-disk":  # nothing half-written left on the full disk either
        assert (tmp_path / "left-on-disk.txt").read_text().split() == ["filler"]


def test_broken_images_are_recorded_as_failures_and_the_run_completes(workspace, tmp_path, as_a_user):
    """Decode failures are per image: embed finishes, and the cache's failure table says why."""
    data = tmp_path / "data"
    shutil.copytree(workspace / "bad-images", data)
    before = snapshot(workspace)
    result = as_a_user("embed", "--data-dir", data, "--out", tmp_path / "out.h5", *EMBED)
    assert result.code == 0 and result.stderr == "", result.stderr
    assert "19 images embedded, 5 failed to decode" in result.stdout
    with h5py.File(tmp_path / "out.h5", "r") as f:
        reasons = dict(zip(f["failures/image_id"].asstr()[()], f["failures/reason"].asstr()[()]))
        embedded = set(f["image_id"].asstr()[()])
    assert set(reasons) == set(BROKEN_IMAGES)
    for name, (phrase, _) in BROKEN_IMAGES.items():
        assert reasons[name].startswith(phrase), (name, reasons[name])
    assert SIXTEEN_BIT in embedded  # a 16-bit image is not broken: it is scaled to 8 bits
    assert snapshot(workspace) == before


def test_a_finding_without_test_positives_is_reported_undefined_when_allowed(workspace, tmp_path, as_a_user):
    """One finding with no positive test image (an error by default, see the matrix): with
    --allow-undefined the run completes, its AUC is left empty, the rest stand, and it says so."""
    before = snapshot(workspace)
    result = as_a_user("fewshot", "--cache", "no-hernia.h5", "--out", tmp_path / "out", *GRID, "--allow-undefined")
    assert result.code == 0, result.stderr
    with open(tmp_path / "out" / "per_class.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["Hernia"] == ""
    assert all(row[name] for name in ("Atelectasis", "Effusion", "Mass"))
    assert "over the 13 findings with a defined AUC (none for Hernia)" in result.stdout
    assert snapshot(workspace) == before


# --- the workspace ---------------------------------------------------------------------------------

SIXTEEN_BIT = "00000004_000.png"
# file -> (the start of the reason the cache records, how to break a good PNG; None: a bomb)
BROKEN_IMAGES = {
    "00000001_001.png": ("corrupt image", lambda good: good[:60] + bytes(200) + good[260:]),
    "00000001_002.png": ("truncated image", lambda good: good[: len(good) // 3]),
    "00000002_000.png": ("empty file (0 bytes)", lambda good: b""),
    "00000002_001.png": ("not an image file", lambda good: b"just text, named like a PNG\n" * 20),
    "00000003_000.png": ("refused as a decompression bomb", None),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_dataset, nih_metadata) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(small_dataset, root / "data")
    embed(EmbedOptions(data_dir=root / "data", out=root / "tiny.h5", model="cxrprobe-tiny", pretrained="none",
                       device="cpu", workers=0))
    _metadata_variants(root)
    _image_variants(root)
    _caches(root, nih_metadata)
    _results_dirs(root)
    _model_and_run_files(root)
    (root / "notes.txt").write_text("a plain text file, in the way of an output path\n")
    (root / "nonempty").mkdir()
    (root / "nonempty" / "keep.txt").write_text("results someone wants to keep\n")
    (root / "full").mkdir()  # the mount point of the full-disk cases
    (root / "readonly").mkdir(mode=0o555)
    yield root
    assert not (root / MARKER).exists(), "something in the workspace was unpickled"


def _metadata_variants(root: Path) -> None:
    source = root / "data"
    header, *rows = list(csv.reader(io.StringIO((source / "Data_Entry_2017_v2020.csv").read_text())))

    def variant(name: str, table: list[list[str]] | None = None, raw: bytes | None = None) -> Path:
        folder = root / name
        folder.mkdir()
        for listing in ("train_val_list.txt", "test_list.txt"):
            shutil.copyfile(source / listing, folder / listing)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(table if table is not None else [header, *rows])
        (folder / "Data_Entry_2017_v2020.csv").write_bytes(raw if raw is not None else buffer.getvalue().encode())
        return folder

    def edit(column: int, value: str) -> list[list[str]]:
        return [header, [*rows[0][:column], value, *rows[0][column + 1:]], *rows[1:]]

    variant("meta-empty", raw=b"")
    variant("meta-no-patient-column", [[cell for i, cell in enumerate(row) if i != 3] for row in [header, *rows]])
    variant("meta-unknown-label", edit(1, "Covid-19"))
    variant("meta-duplicate-id", [header, *rows, rows[0]])
    variant("meta-climbs-out", edit(0, "../../etc/passwd"))
    latin1 = (source / "Data_Entry_2017_v2020.csv").read_text().replace("Gender", "Genre é").encode("latin-1")
    variant("meta-latin1", raw=latin1)
    variant("meta-bad-patient", edit(3, "P17"))
    (variant("meta-no-test-list") / "test_list.txt").unlink()
    truncated = variant("meta-gzip-truncated") / "Data_Entry_2017_v2020.csv"
    truncated.with_name(truncated.name + ".gz").write_bytes(gzip.compress(truncated.read_bytes())[:-40])
    truncated.unlink()
    os.chmod(variant("meta-unreadable") / "Data_Entry_2017_v2020.csv", 0)
    variant("meta-only")  # every metadata file, no image


def _image_variants(root: Path) -> None:
    folder = root / "bad-images"
    shutil.copytree(root / "data", folder)
    good = (folder / "images" / "00000001_000.png").read_bytes()
    for name, (_, breaker) in BROKEN_IMAGES.items():
        if breaker is None:
            write_bomb_png(folder / "images" / name)
        else:
            (folder / "images" / name).write_bytes(breaker(good))
    ramp = (np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) * 4).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "images" / SIXTEEN_BIT)
    bomb = root / "bomb-data"  # one bomb among good training images: adapt must refuse to train on it
    shutil.copytree(root / "data", bomb)
    table = load_nih_metadata(bomb).table
    write_bomb_png(bomb / "images" / table.image_ids[table.split == "train"][0])


def _caches(root: Path, nih_metadata) -> None:  # noqa: ANN001
    rows = np.arange(0, len(nih_metadata.table), 50)  # 2,243 real rows, generated 16-d embeddings
    write_synthetic_cache(root / "nih.h5", nih_metadata, rows, SyntheticModel(dim=16))
    (root / "map-dragon.csv").write_text("test_class,cache_class\nEffusion,Dragon\n")
    (root / "labels-elsewhere.csv").write_text("Image Index,Pneumothorax,Nodule or mass,Airspace opacity,Fracture\n"
                                               "99999999_000.png,YES,NO,NO,NO\n99999999_001.png,NO,NO,YES,NO\n")

    def variant(name: str, change) -> None:  # noqa: ANN001
        shutil.copyfile(root / "nih.h5", root / name)
        with h5py.File(root / name, "a") as f:
            change(f)

    def poke(value: float):  # noqa: ANN202
        def change(f: h5py.File) -> None:
            data = f["embeddings"][()]
            data[7, 3] = value
            f["embeddings"][...] = data
        return change

    def clear_test_labels(columns: slice):  # noqa: ANN202
        def change(f: h5py.File) -> None:
            labels = f["labels"][()]
            labels[f["split"].asstr()[()] == "test", columns] = 0
            f["labels"][...] = labels
        return change

    variant("nan.h5", poke(np.nan))
    variant("inf.h5", poke(np.inf))
    variant("no-positives.h5", clear_test_labels(slice(None)))
    variant("no-hernia.h5", clear_test_labels(slice(13, 14)))
    variant("no-text.h5", lambda f: f.__delitem__("text"))
    variant("incomplete.h5", lambda f: f.attrs.__setitem__("complete", False))
    variant("old-format.h5", lambda f: f.attrs.__setitem__("format_version", 0))
    code = f"__import__('os').system('touch {MARKER}')"
    variant("code-attr.h5", lambda f: f.attrs.__setitem__("preprocessing", code))
    with h5py.File(root / "hollow.h5", "w") as f:  # the attributes of a cache, none of its data
        f.attrs.update(format="cxrprobe-cache", format_version=1, complete=True)
    with h5py.File(root / "foreign.h5", "w") as f:
        f["measurements"] = np.arange(10)
    raw = (root / "tiny.h5").read_bytes()
    (root / "truncated.h5").write_bytes(raw[: len(raw) // 2])
    (root / "resume-me.h5.partial").write_bytes(raw[:3000])
    (root / "empty.h5").write_bytes(b"")
    shutil.copyfile(root / "tiny.h5", root / "unreadable.h5")
    os.chmod(root / "unreadable.h5", 0)
    shutil.copyfile(root / "data" / "images" / "00000001_000.png", root / "image.png")


def _results_dirs(root: Path) -> None:
    run_fewshot(root / "nih.h5", shots=(1,), seeds=2, heads=("prototype",), jobs=1, out=root / "results")
    for name, summary, config in (
        ("results-garbage", "garbage\n", "{}"),
        ("results-bad-config", (root / "results" / "summary.csv").read_text(), "{oops"),
        ("results-short-row", "head,shots,mean_auc,std,ci95_low,ci95_high,n_seeds\nprototype,1\n", "{}"),
    ):
        (root / name).mkdir()
        (root / name / "summary.csv").write_text(summary)
        (root / name / "config.json").write_text(config)


def _model_and_run_files(root: Path) -> None:
    def evil(path: Path, wrapper: str) -> None:
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump({wrapper: Evil(root / MARKER)}, handle)

    evil(root / "evil.pt", "state_dict")
    (root / "empty.safetensors").write_bytes(b"")
    (root / "ck-bad-config").mkdir()
    (root / "ck-bad-config" / "config.json").write_text("{'model': 'cxrprobe-tiny'}")  # Python, not JSON
    (root / "ck-bad-config" / "best.pt").write_bytes(b"")
    (root / "ck-bad-config" / "summary.json").write_text("{}")  # a finished run, but for its config
    (root / "run-bad-config").mkdir()
    (root / "run-bad-config" / "config.json").write_text("{oops")
    (root / "run-two-processes").mkdir()  # a run a torchrun launch of two processes left
    (root / "run-two-processes" / "config.json").write_text('{"processes": 2}')
    evil(root / "run-evil" / "last.pt", "epoch")
    (root / "run-pickled-pixels").mkdir()
    objects = np.empty(3, dtype=object)
    objects[:] = [Evil(root / MARKER)] * 3
    np.save(root / "run-pickled-pixels" / "pixels-train.npy", objects, allow_pickle=True)
    (root / "prompts-bad.json").write_text('{"Pneumonia": ["no closing bracket"')
    (root / "prompts-covid.json").write_text('{"Covid-19": {"positive": ["covid"], "negative": ["no covid"]}}')
    (root / "prompts-ok.json").write_text('{"Pneumonia": {"positive": ["pneumonia"], "negative": ["no pneumonia"]}}')
