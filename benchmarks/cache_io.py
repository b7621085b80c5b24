"""Cache size and read speed at full NIH scale.

    python benchmarks/cache_io.py [--nih-dir NIH_DIR] [--dim 512]

Builds a cache of all 112,120 NIH rows (the real metadata table; synthetic float16 embeddings,
since only their size matters here) through the same shard-and-merge path ``embed`` uses,
then times, in a fresh process each (cold Python, warm OS page cache), opening it and
loading the 25,596 test rows' embeddings and labels. Targets: opening plus the
test rows well under a second; file size within 5% of the raw float16 array.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache
from cxrprobe.data.nih import bundled_metadata_dir, load_nih_metadata

READ_TEST_ROWS = """
import sys, time
t = time.perf_counter()
from cxrprobe.cache.reader import FeatureCache
imported = time.perf_counter()
with FeatureCache(sys.argv[1]) as cache:
    test = cache.rows("test")
    X, Y = cache.embeddings(test), cache.labels[test]
done = time.perf_counter()
print(f"{imported - t:.3f} {done - imported:.3f} {X.shape[0]} {X.shape[1]} {int(Y.sum())}")
"""


def build(path: Path, nih_dir: Path, dim: int) -> None:
    write_synthetic_cache(path, load_nih_metadata(nih_dir), model=SyntheticModel(dim=dim))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nih-dir", type=Path, default=bundled_metadata_dir(),
                        help="an NIH metadata folder [default: the copy bundled with cxrprobe]")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nih-full.h5"
        start = time.perf_counter()
        build(path, args.nih_dir, args.dim)
        print(f"built a 112,120-row cache in {time.perf_counter() - start:.1f} s (generate, shard, commits, merge)")
        raw = 112_120 * args.dim * 2
        size = path.stat().st_size
        print(f"file {size / 1e6:.1f} MB, raw float16 embeddings {raw / 1e6:.1f} MB: overhead {100 * (size / raw - 1):.1f}%")
        timings = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", READ_TEST_ROWS, str(path)], capture_output=True, text=True, check=True)
            imported, load, rows, dim, positives = out.stdout.split()
            timings.append(float(load))
        print(f"open + test rows ({rows} x {dim}, {positives} positive labels): "
              f"median {np.median(timings):.3f} s over {args.repeats} fresh processes (import of cxrprobe {float(imported):.2f} s apart)")
        print(f"cache_overhead_pct={100 * (size / raw - 1):.1f} open_and_test_rows_s={np.median(timings):.3f}")


if __name__ == "__main__":
    main()
