"""SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019): one class, Pneumothorax, from its masks.

``train-rle.csv`` lists ``ImageId, EncodedPixels``: one row per pneumothorax mask of an image
(several rows for several masks), ``-1`` for an image without one. The real file's second
column name begins with a space and copies differ on spaces around ``-1``, so names and values
are stripped before they are compared. An image is positive where any of its rows holds a
mask. The images are DICOMs named ``ImageId.dcm``, found anywhere below the data dir (the
Kaggle layout nests them in study / series folders). The table names no patients, so each
image is its own patient, and there is no labelled official test set: the split is seeded and
recorded.
"""

from __future__ import annotations

import re
from pathlib import Path

from cxrprobe.data.files import find_table, read_dataset_table
from cxrprobe.data.locate import find_images
from cxrprobe.data.one_finding import one_finding_metadata
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED
from cxrprobe.data.table import DatasetMetadata, LocatedDataset
from cxrprobe.errors import DataError
from cxrprobe.labels import LabelSet

DATASET_NAME = "siim-acr-pneumothorax"
TABLE = "train-rle.csv"
COLUMNS = ("ImageId", "EncodedPixels")
LABELS = LabelSet.from_classes(("Pneumothorax",))
UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
MASK = re.compile(r"[0-9]+(?: +[0-9]+)*")  # run-length pairs: start, length, ...
NO_MASK = "-1"


def is_siim(data_dir: Path) -> bool:
    return find_table(Path(data_dir), TABLE) is not None


def load_siim_metadata(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                       val_seed: int = DEFAULT_VAL_SEED) -> tuple[DatasetMetadata, list[str]]:
    path, table = read_dataset_table(data_dir, TABLE, COLUMNS, "SIIM-ACR", f"the SIIM-ACR mask table has {', '.join(COLUMNS)}")
    positive: dict[str, bool] = {}
    for line, (image, mask) in enumerate(zip(table["ImageId"], table["EncodedPixels"]), start=2):
        image, mask = image.strip(), mask.strip()
        if UID.fullmatch(image) is None:
            raise DataError(f"{path.name}: line {line}: ImageId {image!r} is not a DICOM UID")
        if mask != NO_MASK and MASK.fullmatch(mask) is None:
            raise DataError(f"{path.name}: line {line}: EncodedPixels {mask[:40]!r} is neither -1 (no "
                            "pneumothorax) nor a run-length mask")
        positive[image] = positive.get(image, False) or mask != NO_MASK
    metadata = one_finding_metadata(positive, LABELS, path.name, DATASET_NAME, val_fraction, val_seed)
    return metadata, [f"{path.name} names no patients: each image is taken as its own patient, so a "
                      "patient's images may fall in different splits"]


def locate_siim(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                val_seed: int = DEFAULT_VAL_SEED) -> tuple[LocatedDataset, list[str]]:
    metadata, notes = load_siim_metadata(data_dir, val_fraction, val_seed)
    return LocatedDataset(metadata, find_images(Path(data_dir), metadata.table.image_ids)), notes
