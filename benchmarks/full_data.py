"""The cost of the full-data reference point (``--shots all``) head by head, at NIH scale.

    python benchmarks/full_data.py [--cache CACHE.h5] [--heads all] [--search]

Without --cache it builds the full-size synthetic cache (the real 112,120 NIH rows, 512-d
generated embeddings; its training split is every training image of the official list minus
the validation patients). Each head is fitted once on every training image, as
``cxrprobe fewshot --shots all --seeds 1`` fits it, single-threaded as the grid runs a task,
and scores the 25,596 test rows. Per head it prints the fit + score + AUC seconds, the
mean test AUC, and the support size; a head the grid leaves out at ``all`` says why. The
last line reads ``all_s=<summed seconds> heads=<count fitted>``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_cache import add_cache_options, cache_or_synthetic

from cxrprobe.eval.runner import GridSpec, run_grid
from cxrprobe.heads import parse_heads
from cxrprobe.metrics.auc import mean_auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_options(parser)
    parser.add_argument("--heads", default="all")
    parser.add_argument("--search", action="store_true", help="heads that can search do, on a 4-shot validation set")
    args = parser.parse_args()
    heads = parse_heads(args.heads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_or_synthetic(args, Path(tmp))
        total, fitted = 0.0, 0
        print(f"{'head':14s} {'seconds':>8s} {'mean AUC':>9s}  (fit on every training image, 1 thread)")
        for name in heads:
            result = run_grid(cache, GridSpec(("all",), 1, (name,), search=args.search), jobs=1)
            if name in result.not_fitted:
                print(f"  {name:12s} {'-':>8s} {'-':>9s}  {result.not_fitted[name]}")
                continue
            seconds = result.seconds_by_head[name]
            total, fitted = total + seconds, fitted + 1
            print(f"  {name:12s} {seconds:8.1f} {mean_auc(result.runs[0].aucs):9.4f}  "
                  f"support {len(result.supports[0].rows):,} images, labelled {result.runs[0].labelled:,}")
    print(f"all_s={total:.1f} heads={fitted}")


if __name__ == "__main__":
    main()
