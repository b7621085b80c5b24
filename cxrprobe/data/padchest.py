"""PadChest (Bustos et al., Medical Image Analysis 2020; BIMCV, Hospital San Juan, Alicante).

One table, ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)``: a row per image
(``ImageID``, a unique file name, matched against the files found under the data dir), its
``PatientID``, ``StudyID``, ``Projection`` (PA, AP, AP_horizontal, L, COSTAL...),
``MethodLabel`` (``Physician``, or ``RNN_model`` for labels a network read from the report)
and ``Labels``, a Python-list *string* (``['pacemaker', 'chronic changes']``), parsed here by
a pattern, never evaluated. About 190 labels occur: the label set is the classes a user names
or the ``top_classes`` most frequent among the *training* images (never counted on test),
``normal`` apart: it is the normal rule (``['normal']``). Rows without a label list (``nan``)
are left out and counted. There is no official split: a seeded patient-disjoint one. The
16-bit PNGs hold values of ``BitsStored_DICOM`` bits (12 or 10): the ``bits`` intensity
policy scales each by its own depth.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from cxrprobe.data.files import find_table, read_dataset_table, refuse_duplicates
from cxrprobe.data.locate import find_images
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED, seeded_split
from cxrprobe.data.table import DatasetMetadata, ImageTable, LocatedDataset
from cxrprobe.errors import DataError, InputError
from cxrprobe.labels import NORMAL_IF_NO_FINDING, LabelSet

DATASET_NAME = "padchest"
TABLE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
COLUMNS = ("ImageID", "PatientID", "StudyID", "Projection", "MethodLabel", "Labels")
BITS_COLUMN = "BitsStored_DICOM"
NORMAL = "normal"
LABEL_LIST = re.compile(r"\[\s*(?:'[^']*'\s*(?:,\s*'[^']*'\s*)*)?\]")
LABEL = re.compile(r"'([^']*)'")
NO_LABELS = "nan"
FRONTAL = ("PA", "AP", "AP_horizontal")
VIEWS = ("frontal", "PA", "AP", "AP_horizontal", "lateral", "all")
LABEL_METHODS = ("all", "physician")
DEFAULT_TOP_CLASSES = 20


def is_padchest(data_dir: Path) -> bool:
    return find_table(Path(data_dir), TABLE) is not None


def load_padchest_metadata(data_dir: Path, classes: tuple[str, ...] | None = None,
                           top_classes: int = DEFAULT_TOP_CLASSES, views: str = "frontal",
                           label_method: str = "all", val_fraction: float = DEFAULT_VAL_FRACTION,
                           val_seed: int = DEFAULT_VAL_SEED) -> tuple[DatasetMetadata, list[str]]:
    if views not in VIEWS:
        raise InputError(f"--views must be one of {', '.join(VIEWS)} for PadChest, got {views!r}")
    if label_method not in LABEL_METHODS:
        raise InputError(f"--label-method must be one of {', '.join(LABEL_METHODS)}, got {label_method!r}")
    if top_classes < 1:
        raise InputError(f"--top-classes must be at least 1, got {top_classes}")
    path, table = read_dataset_table(data_dir, TABLE, COLUMNS, "PadChest", f"the PadChest table has {', '.join(COLUMNS)}",
                                     optional=(BITS_COLUMN,))
    lists = [_labels(cell, path.name, line) for line, cell in enumerate(table["Labels"], start=2)]
    projection = np.array([p.strip() for p in table["Projection"]], dtype=str)
    keep = _view_mask(projection, views) & np.array([found is not None for found in lists])
    if label_method == "physician":
        keep &= np.array([m.strip() == "Physician" for m in table["MethodLabel"]])
    notes = []
    unlabelled = sum(found is None for found in lists)
    if unlabelled:
        notes.append(f"{path.name}: {unlabelled} images have no label list ({NO_LABELS!r}); they are left out")
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError(f"{path.name}: no image of --views {views} and --label-method {label_method}")
    image_ids = np.array([table["ImageID"][i].strip() for i in rows], dtype=str)
    refuse_duplicates(image_ids, path.name, "image ")
    patients = np.array([table["PatientID"][i].strip() for i in rows], dtype=str)
    try:
        split, test_source = seeded_split(patients, val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    kept = [lists[i] for i in rows]
    chosen, how = _classes(kept, split, classes, top_classes)
    labels = np.array([[name in found for name in chosen] for found in kept], dtype=np.uint8)
    order = np.argsort(image_ids, kind="stable")
    out = ImageTable(
        image_ids=image_ids[order], patient_ids=patients[order], split=split[order], labels=labels[order],
        view=np.where(np.isin(projection[rows], FRONTAL), projection[rows], np.char.lower(projection[rows]))[order],
        normal=np.array([found == {NORMAL} for found in kept])[order],
        study_ids=np.array([table["StudyID"][i].strip() for i in rows], dtype=str)[order],
        label_set=LabelSet.from_classes(chosen, NORMAL_IF_NO_FINDING),
    )
    policy = {"classes": how, "label_method": label_method}
    if BITS_COLUMN in table:
        bits = _bits_stored([table[BITS_COLUMN][i] for i in rows], rows, path.name)[order]
    else:
        bits = None
        notes.append(f"{path.name} has no {BITS_COLUMN} column: 16-bit images are scaled by --intensity "
                     "without their bit depth")
    return DatasetMetadata(table=out, label_source=path.name, val_fraction=val_fraction, val_seed=val_seed,
                           dataset=DATASET_NAME, label_policy=policy, test_source=test_source,
                           bits_stored=bits), notes


def locate_padchest(data_dir: Path, **options: object) -> tuple[LocatedDataset, list[str]]:
    metadata, notes = load_padchest_metadata(data_dir, **options)
    return LocatedDataset(metadata, find_images(Path(data_dir), metadata.table.image_ids)), notes


def _labels(cell: str, source: str, line: int) -> frozenset[str] | None:
    """The labels of a ``Labels`` cell (``['a', 'b']``), stripped, an empty one (``''``, which
    some lists hold) dropped; None for ``nan``."""
    cell = cell.strip()
    if cell == NO_LABELS:
        return None
    if LABEL_LIST.fullmatch(cell) is None:
        raise DataError(f"{source}: line {line}: Labels {cell[:60]!r} is not a list of quoted labels")
    return frozenset(label.strip() for label in LABEL.findall(cell) if label.strip())


def _bits_stored(cells: list[str], rows: np.ndarray, source: str) -> np.ndarray:
    """Each cell's bit depth, 1 to 16; a blank one is 0 (not recorded)."""
    depths = np.zeros(len(cells), dtype=np.int64)
    for k, cell in enumerate(cells):
        cell = cell.strip()
        if not cell or cell == NO_LABELS:
            continue
        if not cell.isdigit() or not 1 <= int(cell) <= 16:
            raise DataError(f"{source}: line {rows[k] + 2}: {BITS_COLUMN} {cell[:20]!r} is not a bit depth of 1 to 16")
        depths[k] = int(cell)
    return depths


def _classes(lists: list[frozenset[str]], split: np.ndarray, named: tuple[str, ...] | None,
             top: int) -> tuple[tuple[str, ...], str]:
    """The label set, and how it was chosen: the named classes (each must occur), or the ``top``
    most frequent on the training images (ties by name), ``normal`` apart."""
    if named:
        seen = set().union(*lists)
        unknown = [c for c in named if c not in seen]
        if unknown:
            raise InputError(f"--classes: {unknown[0]!r} is no PadChest label of these images")
        return tuple(named), "named"
    counts = Counter(label for found, s in zip(lists, split) if s == "train" for label in found if label != NORMAL)
    ranked = sorted(counts, key=lambda label: (-counts[label], label))[:top]
    return tuple(ranked), f"the {len(ranked)} most frequent on the training images"


def _view_mask(projection: np.ndarray, views: str) -> np.ndarray:
    if views == "all":
        return np.ones(len(projection), dtype=bool)
    if views == "lateral":
        return projection == "L"
    return np.isin(projection, FRONTAL if views == "frontal" else (views,))
