"""What the grid benchmarks share: a --cache to run on, or else the full-size synthetic cache
(the real 112,120 NIH rows, splits and patients; 512-d generated embeddings) built from
--nih-dir's metadata into a temporary folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxrprobe.cache.synthetic import write_synthetic_cache
from cxrprobe.data.nih import bundled_metadata_dir, load_nih_metadata


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", type=Path, help="a cache to run on [default: the full-size synthetic one]")
    parser.add_argument("--nih-dir", type=Path, default=bundled_metadata_dir(),
                        help="an NIH metadata folder [default: the copy bundled with cxrprobe]")


def cache_or_synthetic(args: argparse.Namespace, folder: Path) -> Path:
    """``--cache``, or the full-size synthetic cache written into ``folder``."""
    if args.cache is not None:
        return args.cache
    cache = Path(folder) / "synthetic.h5"
    write_synthetic_cache(cache, load_nih_metadata(args.nih_dir))
    return cache
