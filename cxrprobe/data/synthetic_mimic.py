"""MIMIC-CXR-JPG's three tables, generated from the documented schema (no MIMIC metadata is
public): for tests, the benchmark and anyone trying the adapter without PhysioNet access.

Patients have 1-6 studies of 1-3 images (frontal AP or PA, sometimes a lateral), each study
labelled with the CheXpert observations as 1, 0, -1 or blank; the split is by patient.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from cxrprobe.data.chexpert import CLASSES, NO_FINDING
from cxrprobe.data.mimic import PREFIX

VALUE_TEXT = ("1.0", "0.0", "-1.0", "")  # positive, negative, uncertain, blank
VALUE_SHARE = (0.08, 0.12, 0.04, 0.76)
# the metadata table's columns after the ids, as PhysioNet documents them
ACQUISITION = ("PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
               "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
               "PatientOrientationCodeSequence_CodeMeaning")
VIEW_NAMES = {"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral"}


def write_mimic_tables(root: Path, n_images: int, seed: int = 0, image_size: int = 0,
                       shares: tuple[float, float, float] = (0.96, 0.01, 0.03)) -> int:
    """The split, metadata and chexpert tables of about ``n_images`` images under ``root``,
    patients in train / validate / test by ``shares`` (the real split's, by default); with
    ``image_size`` > 0 a generated JPEG at each image's place under ``files/``. Returns the
    number of images."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    split_rows, meta_rows, label_rows = [], [], []
    subject, study = 10_000_000, 50_000_000
    while len(split_rows) < n_images:
        subject += int(rng.integers(1, 30))
        split = rng.choice(["train", "validate", "test"], p=list(shares))
        for _ in range(int(rng.integers(1, 7))):
            study += int(rng.integers(1, 400))
            values = rng.choice(len(VALUE_TEXT), size=len(CLASSES), p=VALUE_SHARE)
            normal = "1.0" if not (values == 0).any() and not (values == 2).any() and rng.random() < 0.6 else ""
            label_rows.append([subject, study, normal, *[VALUE_TEXT[v] for v in values]])
            for k in range(int(rng.integers(1, 4))):
                dicom = "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5))
                view = "LATERAL" if k == 2 else str(rng.choice(["AP", "PA"]))
                split_rows.append([dicom, study, subject, split])
                meta_rows.append([dicom, subject, study, *_acquisition(view, study, rng)])
                if image_size:
                    folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
                    folder.mkdir(parents=True, exist_ok=True)
                    pixels = rng.integers(0, 255, (image_size, image_size), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{dicom}.jpg", quality=90)
    _write(root / f"{PREFIX}split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    _write(root / f"{PREFIX}metadata.csv.gz", ["dicom_id", "subject_id", "study_id", *ACQUISITION], meta_rows)
    _write(root / f"{PREFIX}chexpert.csv.gz", ["subject_id", "study_id", NO_FINDING, *CLASSES], label_rows)
    return len(split_rows)


def _acquisition(view: str, study: int, rng: np.random.Generator) -> list[object]:
    procedure = "CHEST (PORTABLE AP)" if view == "AP" else "CHEST (PA AND LAT)"
    rows, columns = (3056, 2544) if rng.random() < 0.7 else (2544, 3056)
    hours, minutes, seconds, milliseconds = (int(x) for x in rng.integers(0, (24, 60, 60, 1000)))
    time_of_day = f"{hours:02d}{minutes:02d}{seconds:02d}.{milliseconds:03d}"
    return [procedure, view, rows, columns, 21000101 + study % 1_000_000, time_of_day, procedure, VIEW_NAMES[view], "Erect"]


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with gzip.open(path, "wt", newline="") as f:
        csv.writer(f).writerows([header, *rows])
