"""How fast the dataset adapters parse their metadata: the real 223,414-row CheXpert train.csv
(torchxrayvision's package data: pip install torchxrayvision==1.5.7), every view, with the
cyclic collector paused while rows are parsed (the adapter's way) and left running (the
plain way) side by side; and MIMIC-CXR-JPG's three tables generated at full size (about 377,110
images, the documented schema), with plain tables split by str.split (cxrprobe's way) and by
the csv module side by side. Target (issue 16): each under 3 s on 2 cores.

    python benchmarks/datasets.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import importlib.resources
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from cxrprobe.data.chexpert import load_chexpert_metadata
from cxrprobe.data.mimic import load_mimic_metadata
from cxrprobe.data.synthetic_mimic import write_mimic_tables


def chexpert_folder(root: Path) -> Path:
    """The real train.csv and, as valid.csv, its first 200 rows re-filed under valid/."""
    source = Path(str(importlib.resources.files("torchxrayvision") / "data" / "chexpert_train.csv.gz"))
    shutil.copy(source, root / "train.csv.gz")
    with gzip.open(source, "rt", newline="") as f:
        rows = [row for _, row in zip(range(201), csv.reader(f))]
    with open(root / "valid.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *[[r[0].replace("/train/", "/valid/", 1), *r[1:]] for r in rows[1:]]])
    return root


def median_seconds(load, repeats: int) -> tuple[float, int]:  # noqa: ANN001
    times, rows = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        rows = len(load().table)
        times.append(time.perf_counter() - start)
    return statistics.median(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = chexpert_folder(Path(folder))
        print(f"CheXpert train.csv + valid.csv, every view ({args.repeats} runs, median)")
        paused, rows = median_seconds(lambda: load_chexpert_metadata(root, views="all"), args.repeats)
        with mock.patch("cxrprobe.data.chexpert.collector_paused", contextlib.nullcontext):
            running, _ = median_seconds(lambda: load_chexpert_metadata(root, views="all"), args.repeats)
        frontal, frontal_rows = median_seconds(lambda: load_chexpert_metadata(root), args.repeats)
        print(f"  collector paused (cxrprobe):  {paused:6.2f} s  {rows / paused:9,.0f} rows/s  ({rows:,} rows)")
        print(f"  collector running (plain):    {running:6.2f} s  {rows / running:9,.0f} rows/s  ({running / paused:.2f}x)")
        print(f"  frontal views only (default): {frontal:6.2f} s  {frontal_rows:,} rows kept")
        print(f"  target: under 3 s -> {'met' if paused < 3 else 'NOT met'}")
        mimic = Path(folder) / "mimic"
        images = write_mimic_tables(mimic, 377_110)
        print(f"MIMIC-CXR-JPG split + metadata + chexpert tables, generated ({images:,} images), every view")
        seconds, rows = median_seconds(lambda: load_mimic_metadata(mimic, views="all"), args.repeats)
        with mock.patch("cxrprobe.data.files._plain_fields", lambda data, text: None):
            csv_only, _ = median_seconds(lambda: load_mimic_metadata(mimic, views="all"), args.repeats)
        print(f"  parse (cxrprobe):             {seconds:6.2f} s  {rows / seconds:9,.0f} rows/s  ({rows:,} images)")
        print(f"  tables read by the csv module: {csv_only:5.2f} s  {rows / csv_only:9,.0f} rows/s  "
              f"({csv_only / seconds:.2f}x)")
        print(f"  target: under 3 s -> {'met' if seconds < 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
