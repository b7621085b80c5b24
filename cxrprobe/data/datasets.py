"""Which adapter reads a data dir: NIH ChestX-ray14, CheXpert or MIMIC-CXR-JPG, named or detected."""

from __future__ import annotations

from pathlib import Path

from cxrprobe.data.chexpert import VIEWS, is_chexpert, locate_chexpert
from cxrprobe.data.mimic import is_mimic, locate_mimic
from cxrprobe.data.nih import locate_dataset as locate_nih
from cxrprobe.data.policies import LabelPolicy
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED
from cxrprobe.data.table import LocatedDataset
from cxrprobe.errors import InputError

DATASETS = ("auto", "nih", "chexpert", "mimic")


def detect(data_dir: Path) -> str:
    """``chexpert`` where the folder holds CheXpert's train.csv, ``mimic`` where it holds
    MIMIC-CXR-JPG's split table, else ``nih``."""
    if is_chexpert(Path(data_dir)):
        return "chexpert"
    return "mimic" if is_mimic(Path(data_dir)) else "nih"


def locate(data_dir: Path, dataset: str = "auto", policy: LabelPolicy = LabelPolicy(), views: str = "frontal",
           val_fraction: float = DEFAULT_VAL_FRACTION, val_seed: int = DEFAULT_VAL_SEED,
           labeler: str = "chexpert") -> LocatedDataset:
    """The dataset's metadata and each row's image file; the policy and views apply to the
    datasets that have uncertain labels and several views (CheXpert)."""
    if dataset not in DATASETS:
        raise InputError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if views not in VIEWS:
        raise InputError(f"--views must be one of {', '.join(VIEWS)}, got {views!r}")
    name = detect(data_dir) if dataset == "auto" else dataset
    if name == "chexpert":
        return locate_chexpert(Path(data_dir), policy, views, val_fraction, val_seed)
    if name == "mimic":  # its official split, validation included
        return locate_mimic(Path(data_dir), policy, views, labeler)
    return locate_nih(Path(data_dir), val_fraction, val_seed)
