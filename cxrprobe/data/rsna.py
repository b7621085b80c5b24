"""RSNA Pneumonia Detection Challenge (Kaggle, 2018): one class, Pneumonia, from its boxes.

``stage_2_train_labels.csv`` lists ``patientId, x, y, width, height, Target``: one row per
box of lung opacity suggestive of pneumonia (``Target`` 1), or one row with ``Target`` 0 for
an image without. Each ``patientId`` is one image, ``patientId.dcm``, found anywhere below the
data dir; an image is positive where any of its rows is. The challenge's test labels were
never released, so the split is seeded and recorded.

The images are a re-annotated subset of NIH ChestX-ray14 (Shih et al., Radiology: AI 2019),
whose patient ids the challenge replaced: a patient's images may fall in different splits,
and an NIH cache may hold the same images (``OVERLAP``).
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

DATASET_NAME = "rsna-pneumonia"
TABLE = "stage_2_train_labels.csv"
COLUMNS = ("patientId", "Target")
LABELS = LabelSet.from_classes(("Pneumonia",))
IMAGE_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
OVERLAP = ("its images are a re-annotated subset of NIH ChestX-ray14 under new ids: results on it and "
           "on an NIH cache are not independent")


def is_rsna(data_dir: Path) -> bool:
    return find_table(Path(data_dir), TABLE) is not None


def load_rsna_metadata(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                       val_seed: int = DEFAULT_VAL_SEED) -> tuple[DatasetMetadata, list[str]]:
    path, table = read_dataset_table(data_dir, TABLE, COLUMNS, "RSNA Pneumonia", f"the RSNA Pneumonia table has {', '.join(COLUMNS)}")
    positive: dict[str, bool] = {}
    for line, (image, target) in enumerate(zip(table["patientId"], table["Target"]), start=2):
        image, target = image.strip(), target.strip()
        if IMAGE_ID.fullmatch(image) is None:
            raise DataError(f"{path.name}: line {line}: patientId {image!r} is not an RSNA image id")
        if target not in ("0", "1"):
            raise DataError(f"{path.name}: line {line}: Target {target!r} must be 0 or 1")
        positive[image] = positive.get(image, False) or target == "1"
    metadata = one_finding_metadata(positive, LABELS, path.name, DATASET_NAME, val_fraction, val_seed)
    return metadata, [f"RSNA Pneumonia: {OVERLAP}; each image is taken as its own patient"]


def locate_rsna(data_dir: Path, val_fraction: float = DEFAULT_VAL_FRACTION,
                val_seed: int = DEFAULT_VAL_SEED) -> tuple[LocatedDataset, list[str]]:
    metadata, notes = load_rsna_metadata(data_dir, val_fraction, val_seed)
    return LocatedDataset(metadata, find_images(Path(data_dir), metadata.table.image_ids)), notes
