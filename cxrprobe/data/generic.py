"""A user's own export: one CSV (or Hugging Face imagefolder's metadata.csv / metadata.jsonl)
naming each image and its labels.

Columns: the image's path relative to the data dir (``--image-col``, imagefolder's
``file_name`` by default), the label columns (``--label-cols``, values 1, 0, -1 or blank under
the same ``LabelPolicy`` as CheXpert), and optionally the patient, split, study and a normal
flag. Paths are matched against the files found under the data dir, never joined into a
path; one that is absolute or climbs out with '..' is refused. Without a patient column every
image is its own patient (and the adapter says so: a patient with several images would then
straddle splits); without a split column a seeded patient-disjoint train / val / test split is
made and recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cxrprobe.data.files import collector_paused, find_table, read_csv_columns, read_text, refuse_duplicates
from cxrprobe.data.locate import find_by_relative_path
from cxrprobe.data.policies import LabelPolicy, parse_values
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, seeded_split, shared_patients
from cxrprobe.data.table import DatasetMetadata, ImageTable, LocatedDataset
from cxrprobe.errors import DataError, InputError
from cxrprobe.labels import NORMAL_IF_NO_FINDING, NORMAL_IF_NONE_POSITIVE, LabelSet

DATASET_NAME = "csv"
IMAGEFOLDER_FILES = ("metadata.csv", "metadata.jsonl")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validate": "val", "validation": "val",
               "test": "test"}


@dataclass(frozen=True)
class Columns:
    """Which columns of the table hold what."""

    labels: tuple[str, ...]
    image: str = "file_name"
    patient: str | None = None
    split: str | None = None
    study: str | None = None
    normal: str | None = None

    @classmethod
    def parse(cls, label_cols: str, **named: str | None) -> Columns:
        labels = tuple(dict.fromkeys(c.strip() for c in (label_cols or "").split(",") if c.strip()))
        if not labels:
            raise InputError("--label-cols must name the label columns (comma-separated)")
        return cls(labels, **{k: v for k, v in named.items() if v is not None})


def load_csv_metadata(data_dir: Path, columns: Columns, labels_file: Path | None = None,
                      policy: LabelPolicy = LabelPolicy(), val_fraction: float = DEFAULT_VAL_FRACTION,
                      val_seed: int = DEFAULT_VAL_SEED) -> tuple[DatasetMetadata, list[str]]:
    """The table's metadata and the notes a user should read (a missing patient column)."""
    data_dir = Path(data_dir)
    path = Path(labels_file) if labels_file is not None else next(
        filter(None, (find_table(data_dir, name) for name in IMAGEFOLDER_FILES)), None)
    if path is None or not path.is_file():
        raise DataError(f"no labels table: {labels_file} does not exist" if labels_file is not None else
                        f"no labels table in {data_dir}: give --labels FILE, or put imagefolder's "
                        f"{' or '.join(IMAGEFOLDER_FILES)} beside the images")
    with collector_paused():
        table = _read_rows(path)
    named = [columns.image, *columns.labels, *(c for c in (columns.patient, columns.split, columns.study,
                                                           columns.normal) if c)]
    missing = [c for c in named if c not in table]
    if missing:
        raise DataError(f"{path.name} has no {missing[0]!r} column (it has {', '.join(table)})")
    image_ids = np.array([_relative(v, path.name, line) for line, v in enumerate(table[columns.image], start=2)],
                         dtype=str)
    refuse_duplicates(image_ids, path.name, "image ")
    notes = []
    if columns.patient:
        patients = np.asarray(table[columns.patient], dtype=str)
    else:
        notes.append(f"{path.name} has no patient column (--patient-col): each image is taken as its own "
                     "patient, so a patient's images may fall in different splits")
        patients = image_ids
    values = parse_values([table[c] for c in columns.labels], columns.labels, path.name)
    labels, known = policy.apply(values)
    if columns.normal:
        normal = parse_values([table[columns.normal]], (columns.normal,), path.name)[:, 0] == 1
        rule = NORMAL_IF_NO_FINDING
    else:
        normal, rule = (labels.sum(axis=1) == 0) & known.all(axis=1), NORMAL_IF_NONE_POSITIVE
    split, test_source = _splits(table, columns, patients, path.name, val_fraction, val_seed)
    if not (split == "test").any():
        raise DataError(f"{path.name}: no image is in the test split")
    order = np.argsort(image_ids, kind="stable")
    out = ImageTable(
        image_ids=image_ids[order], patient_ids=patients[order], split=split[order], labels=labels[order],
        view=np.full(len(order), "", dtype=str), known=known[order], normal=normal[order],
        study_ids=np.asarray(table[columns.study], dtype=str)[order] if columns.study else None,
        label_set=LabelSet.from_classes(columns.labels, rule),
    )
    return DatasetMetadata(table=out, label_source=path.name, val_fraction=val_fraction, val_seed=val_seed,
                           dataset=DATASET_NAME, label_policy=policy.as_dict(), test_source=test_source), notes


def locate_csv(data_dir: Path, columns: Columns, labels_file: Path | None = None,
               policy: LabelPolicy = LabelPolicy(), val_fraction: float = DEFAULT_VAL_FRACTION,
               val_seed: int = DEFAULT_VAL_SEED) -> tuple[LocatedDataset, list[str]]:
    metadata, notes = load_csv_metadata(data_dir, columns, labels_file, policy, val_fraction, val_seed)
    return LocatedDataset(metadata, find_by_relative_path(Path(data_dir), metadata.table.image_ids)), notes


def _read_rows(path: Path) -> dict[str, list[str]]:
    """Column name -> its values as strings ('' for blank or null), from CSV or JSON lines."""
    if path.name.removesuffix(".gz").endswith(".jsonl"):
        records = []
        for line, raw in enumerate(read_text(path).splitlines(), start=1):
            if raw.strip():
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path.name}: line {line} is not JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path.name}: line {line} is not a JSON object")
                records.append(record)
        names = list(dict.fromkeys(k for r in records for k in r))
        return {n: ["" if r.get(n) is None else _text(r.get(n)) for r in records] for n in names}
    return read_csv_columns(path)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _relative(value: str, source: str, line: int) -> str:
    """A path relative to the data dir, in POSIX form; refused if it could leave it."""
    path = PurePosixPath(value.strip().replace("\\", "/"))
    if not value.strip() or path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise DataError(f"{source}: line {line}: image path {value!r} must be relative to the data dir, "
                        "without '..'")
    return path.as_posix()


def _splits(table: dict[str, list[str]], columns: Columns, patients: np.ndarray, source: str,
            val_fraction: float, val_seed: int) -> tuple[np.ndarray, str]:
    if columns.split:
        given = table[columns.split]
        bad = next((v for v in given if v.strip().lower() not in SPLIT_NAMES), None)
        if bad is not None:
            raise DataError(f"{source}: split {bad!r} is none of {', '.join(SPLIT_NAMES)}")
        split = np.array([SPLIT_NAMES[v.strip().lower()] for v in given], dtype=str)
        overlap = shared_patients(split, patients)
        if overlap is not None:
            a, b, shared = overlap
            raise DataError(f"{source}: patient {shared[0]} has images in both {a} and {b}; splits must "
                            "be patient-disjoint")
        return split, f"the {columns.split!r} column"
    try:
        return seeded_split(patients, val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
