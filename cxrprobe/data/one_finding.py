"""The table of a dataset that labels one finding per image, named by an id (SIIM-ACR, RSNA
Pneumonia): ``ID.dcm`` files, each image its own patient, and a seeded, recorded split, as
neither names patients nor released labelled test sets."""

from __future__ import annotations

import numpy as np

from cxrprobe.data.splits import seeded_split
from cxrprobe.data.table import DatasetMetadata, ImageTable
from cxrprobe.errors import DataError
from cxrprobe.labels import LabelSet


def one_finding_metadata(positive: dict[str, bool], finding: LabelSet, source: str, dataset: str,
                         val_fraction: float, val_seed: int) -> DatasetMetadata:
    """``positive``: image id -> whether the finding is present."""
    if not positive:
        raise DataError(f"{source} lists no image")
    names = sorted(positive)
    image_ids = np.array([f"{name}.dcm" for name in names], dtype=str)
    try:
        split, test_source = seeded_split(image_ids, val_fraction, val_seed)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    table = ImageTable(image_ids=image_ids, patient_ids=image_ids, split=split,
                       labels=np.array([[positive[name]] for name in names], dtype=np.uint8),
                       view=np.full(len(names), "", dtype=str), label_set=finding)
    return DatasetMetadata(table=table, label_source=source, val_fraction=val_fraction, val_seed=val_seed,
                           dataset=dataset, test_source=test_source)
