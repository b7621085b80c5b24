"""The dataset flags embed and adapt share (``cxrprobe.data.datasets.DatasetOptions``), declared
once: ``with_dataset_flags`` adds them to a command, which receives them as one dict."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

FLAGS: tuple[tuple[str, Any, Any], ...] = (  # (parameter, type with its typer option, default)
    ("dataset", Annotated[str, typer.Option("--dataset", help="nih, chexpert, mimic, padchest, siim, rsna, vindr, csv (your own table: --label-cols ...), or auto (detected from the data dir).")], "auto"),
    ("uncertain", Annotated[str, typer.Option(help="An uncertain label (CheXpert's -1): ignore (unknown: not fitted, not scored), zero or one.")], "ignore"),
    ("blank", Annotated[str, typer.Option(help="An unmentioned label (blank): negative (as the CheXpert authors) or ignore (unknown).")], "negative"),
    ("views", Annotated[str, typer.Option(help="CheXpert / MIMIC-CXR / PadChest views: frontal (AP and PA; PadChest's AP_horizontal too), AP, PA, AP_horizontal (PadChest), lateral or all.")], "frontal"),
    ("labeler", Annotated[str, typer.Option(help="MIMIC-CXR-JPG's label table: chexpert or negbio.")], "chexpert"),
    ("labels", Annotated[Optional[Path], typer.Option("--labels", help="--dataset csv: the labels table (default: imagefolder's metadata.csv or metadata.jsonl in the data dir).")], None),
    ("image_col", Annotated[str, typer.Option(help="--dataset csv: the column of image paths, relative to the data dir.")], "file_name"),
    ("label_cols", Annotated[Optional[str], typer.Option(help="--dataset csv: the label columns, comma-separated (values 1, 0, -1 or blank).")], None),
    ("patient_col", Annotated[Optional[str], typer.Option(help="--dataset csv: the patient column (default: each image its own patient).")], None),
    ("split_col", Annotated[Optional[str], typer.Option(help="--dataset csv: the split column, train / val / test (default: a seeded patient-disjoint split).")], None),
    ("study_col", Annotated[Optional[str], typer.Option(help="--dataset csv: the study column.")], None),
    ("normal_col", Annotated[Optional[str], typer.Option(help="--dataset csv: a 1/0 column marking normal images (default: no label positive).")], None),
    ("val_fraction", Annotated[float, typer.Option(help="Share of train patients carved out for validation (datasets without an official validation split).")], 0.1),
    ("val_seed", Annotated[int, typer.Option(help="Seed of the patient-wise validation carve-out.")], 7),
    ("intensity", Annotated[str, typer.Option(help="A 16-bit image to 8 bits: bits (by the stored bit depth the metadata gives, else as minmax), minmax (its own range) or percentile (its 0.5-99.5th percentiles).")], "bits"),
    ("classes", Annotated[Optional[str], typer.Option(help="PadChest: the classes, comma-separated (default: the --top-classes most frequent on the training images).")], None),
    ("top_classes", Annotated[int, typer.Option(help="PadChest: how many of the most frequent labels (on the training images) make the classes.")], 20),
    ("label_method", Annotated[str, typer.Option(help="PadChest: all, or physician (only its radiologist-labelled images).")], "all"),
    ("dicom_window", Annotated[str, typer.Option(help="A DICOM file's values: voi (its VOI LUT or window, else as bits), minmax (its own range) or bits (its stored bit range); needs cxrprobe[dicom].")], "voi"),
)


def dataset_options(flags: dict) -> dict:
    """The DatasetOptions fields from the flags' values (the CSV columns parsed for --dataset csv)."""
    from cxrprobe.data.generic import Columns

    columns = Columns.parse(flags["label_cols"], image=flags["image_col"], patient=flags["patient_col"],
                            split=flags["split_col"], study=flags["study_col"],
                            normal=flags["normal_col"]) if flags["dataset"] == "csv" else None
    named = ("dataset", "uncertain", "blank", "views", "labeler", "val_fraction", "val_seed", "intensity",
             "dicom_window", "top_classes", "label_method")
    classes = tuple(c.strip() for c in flags["classes"].split(",") if c.strip()) if flags["classes"] else None
    return {**{k: flags[k] for k in named}, "labels_file": flags["labels"], "columns": columns,
            "named_classes": classes}


def with_dataset_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with the dataset flags as options of its own; it gets their DatasetOptions
    fields as its ``data`` argument."""
    signature = inspect.signature(command, eval_str=True)  # its annotations as objects, as the flags
    flags = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
             for name, kind, default in FLAGS]
    own = [p for p in signature.parameters.values() if p.name != "data"]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name, _, _ in FLAGS}
        return command(**kwargs, data=dataset_options(values))

    wrapper.__signature__ = signature.replace(parameters=[*own, *flags])  # what typer reads
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper
