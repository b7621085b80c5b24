"""Which adapter reads a data dir: NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG, PadChest,
SIIM-ACR Pneumothorax, RSNA Pneumonia, VinDr-CXR or a user's CSV / imagefolder export
(``csv``, named only: its columns must be given)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrprobe.data.chexpert import is_chexpert, locate_chexpert
from cxrprobe.data.dicom import DICOM_WINDOWS
from cxrprobe.data.generic import Columns, locate_csv
from cxrprobe.data.grey import INTENSITIES
from cxrprobe.data.mimic import is_mimic, locate_mimic
from cxrprobe.data.nih import locate_dataset as locate_nih
from cxrprobe.data.padchest import DEFAULT_TOP_CLASSES, is_padchest, locate_padchest
from cxrprobe.data.padchest import VIEWS as PADCHEST_VIEWS
from cxrprobe.data.policies import LabelPolicy
from cxrprobe.data.rsna import is_rsna, locate_rsna
from cxrprobe.data.siim import is_siim, locate_siim
from cxrprobe.data.splits import DEFAULT_VAL_FRACTION, DEFAULT_VAL_SEED
from cxrprobe.data.table import LocatedDataset
from cxrprobe.data.vindr import is_vindr, locate_vindr
from cxrprobe.errors import InputError

DATASETS = ("auto", "nih", "chexpert", "mimic", "padchest", "siim", "rsna", "vindr", "csv")
# VinDr-CXR first: Kaggle's VinDr table is a train.csv too, which CheXpert's detector would claim
DETECTED = (("vindr", is_vindr), ("chexpert", is_chexpert), ("mimic", is_mimic), ("padchest", is_padchest),
            ("siim", is_siim), ("rsna", is_rsna))


def detect(data_dir: Path) -> str:
    """The first dataset whose table the folder holds (VinDr-CXR's annotations/image_labels_train.csv
    or Kaggle train.csv, CheXpert's train.csv, MIMIC-CXR-JPG's split table, PadChest's table,
    SIIM-ACR's train-rle.csv, RSNA's stage_2_train_labels.csv), else ``nih``."""
    return next((name for name, holds in DETECTED if holds(Path(data_dir))), "nih")


@dataclass(frozen=True, kw_only=True)
class DatasetOptions:
    """What names and reads a dataset: its adapter, and the choices the adapters take, flat as
    on the command line (embed's and adapt's options extend it)."""

    dataset: str = "auto"  # nih, chexpert, mimic, padchest, siim, rsna, vindr, csv, or detected from the data dir
    uncertain: str = "ignore"  # CheXpert's -1: ignore (unknown), zero or one
    blank: str = "negative"  # an unmentioned label: negative or ignore (unknown)
    views: str = "frontal"  # CheXpert, MIMIC-CXR, PadChest: frontal, AP, PA, AP_horizontal, lateral or all
    labeler: str = "chexpert"  # MIMIC-CXR's label table: chexpert or negbio
    columns: Columns | None = None  # csv: which columns hold the image, labels, patient...
    labels_file: Path | None = None  # csv: the table (default: imagefolder's metadata.csv / .jsonl)
    val_fraction: float = DEFAULT_VAL_FRACTION  # where validation is carved from train
    val_seed: int = DEFAULT_VAL_SEED
    intensity: str = "bits"  # how a 16-bit image becomes 8 bits (data.images.Preprocessing)
    dicom_window: str = "voi"  # how a DICOM file's values are shown (data.dicom)
    named_classes: tuple[str, ...] | None = None  # PadChest's --classes (default: the top_classes most frequent)
    top_classes: int = DEFAULT_TOP_CLASSES
    label_method: str = "all"  # PadChest: all, or physician (its radiologist-labelled images)

    def __post_init__(self) -> None:
        self.policy  # noqa: B018 -- an unknown policy name is an input error before anything is read
        if self.intensity not in INTENSITIES:
            raise InputError(f"--intensity must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}")
        if self.dicom_window not in DICOM_WINDOWS:
            raise InputError(f"--dicom-window must be one of {', '.join(DICOM_WINDOWS)}, got {self.dicom_window!r}")

    @property
    def policy(self) -> LabelPolicy:
        try:
            return LabelPolicy(self.uncertain, self.blank)
        except ValueError as exc:
            raise InputError(f"--{exc}") from None  # "--uncertain must be one of ..."


def locate(data_dir: Path, options: DatasetOptions = DatasetOptions()) -> tuple[LocatedDataset, list[str]]:
    """The dataset's metadata, each row's image file, and notes for the user."""
    if options.dataset not in DATASETS:
        raise InputError(f"--dataset must be one of {', '.join(DATASETS)}, got {options.dataset!r}")
    if options.views not in PADCHEST_VIEWS:  # CheXpert's and MIMIC's, and PadChest's AP_horizontal
        raise InputError(f"--views must be one of {', '.join(PADCHEST_VIEWS)}, got {options.views!r}")
    if (options.dataset == "csv") != (options.columns is not None):
        raise InputError("--label-cols (and --image-col) go with --dataset csv, and it needs them")
    data_dir = Path(data_dir)
    name = detect(data_dir) if options.dataset == "auto" else options.dataset
    padchest_only = {"--classes": options.named_classes is not None, "--top-classes": options.top_classes !=
                     DEFAULT_TOP_CLASSES, "--label-method": options.label_method != "all"}
    if name != "padchest" and any(padchest_only.values()):  # ignored, they would leave the user misled
        flag = next(flag for flag, given in padchest_only.items() if given)
        raise InputError(f"{flag} chooses PadChest's classes; this data dir is read as {name}")
    if name == "csv":
        return locate_csv(data_dir, options.columns, options.labels_file, options.policy, options.val_fraction,
                          options.val_seed)
    if name == "chexpert":
        return locate_chexpert(data_dir, options.policy, options.views, options.val_fraction, options.val_seed)
    if name == "padchest":
        return locate_padchest(data_dir, classes=options.named_classes, top_classes=options.top_classes,
                               views=options.views, label_method=options.label_method,
                               val_fraction=options.val_fraction, val_seed=options.val_seed)
    if name in ("siim", "rsna"):
        return (locate_siim if name == "siim" else locate_rsna)(data_dir, options.val_fraction, options.val_seed)
    if name == "vindr":  # PhysioNet's official test split, or a seeded one for Kaggle's table
        return locate_vindr(data_dir, options.val_fraction, options.val_seed)
    if name == "mimic":  # its official split, validation included
        return locate_mimic(data_dir, options.policy, options.views, options.labeler), []
    return locate_nih(data_dir, options.val_fraction, options.val_seed), []
