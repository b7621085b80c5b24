"""The few-shot grid against a straightforward per-run loop, side by side, on one cache.

    python benchmarks/fewshot_grid.py [--cache CACHE.h5] [--shots 1,2,4,8,16] [--seeds 20] [--jobs 2] [--heads ...]

Without --cache it builds the full-size synthetic cache (the real 112,120 NIH rows, 512-d
generated embeddings). The naive loop is what one would write first: for each shots, seed and
head, draw the support set, fit the head, score all 25,596 test rows and call sklearn's
roc_auc_score per finding, one run after another in one process with default threading; the
heads and their training lengths are the same objects the grid uses. The grid is
``cxrprobe fewshot`` (run_fewshot, results dir included). Both runs' mean AUCs are compared,
so the speed-up is not bought with different numbers. With the paper-mlp among the heads it
also prints the speed-up ceiling its own cost sets (it costs about the same in both loops:
naive_s / (its grid CPU-seconds / jobs)). The last line reads
``grid_s=<seconds> naive_s=<seconds> speedup=<ratio>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from bench_cache import add_cache_options, cache_or_synthetic
from sklearn.metrics import roc_auc_score

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.commands.fewshot import run_fewshot
from cxrprobe.eval.options import parse_shots, read_shots
from cxrprobe.eval.runner import GridSpec, run_grid
from cxrprobe.eval.sampler import draw_support
from cxrprobe.heads import BASE_HEADS, make_head, parse_heads


def naive_loop(
    cache_path: Path, shots: tuple[int, ...], seeds: int, heads: tuple[str, ...],
) -> tuple[dict[tuple[str, int], float], dict[str, float]]:
    with FeatureCache(cache_path) as cache:
        X = cache.embeddings()
        Y = cache.labels
        split = cache.table.split
        text = cache.text_prompts()
    test = np.flatnonzero(split == "test")
    center = X[split == "train"].mean(axis=0)
    means: dict[tuple[str, int], list[float]] = {}
    seconds = dict.fromkeys(heads, 0.0)
    for n in shots:
        for seed in range(seeds):
            support = draw_support(Y, split, n, seed)
            for name in heads:
                start = time.perf_counter()
                head = make_head(name, text, center, random_state=seed).fit(X[support.rows], Y[support.rows])
                scores = head.decision_function(X[test])
                aucs = []
                for c in range(Y.shape[1]):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        aucs.append(roc_auc_score(Y[test, c], scores[:, c]))
                means.setdefault((name, n), []).append(float(np.nanmean(aucs)))
                seconds[name] += time.perf_counter() - start
    return {key: float(np.mean(values)) for key, values in means.items()}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_options(parser)
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--heads", default=",".join(BASE_HEADS), help="default: the six base heads of the target")
    parser.add_argument("--skip-naive", action="store_true", help="time the grid only")
    args = parser.parse_args()
    shots = parse_shots(args.shots)
    heads = parse_heads(args.heads)
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_or_synthetic(args, Path(tmp))
        start = time.perf_counter()
        run_fewshot(cache, shots=shots, seeds=args.seeds, heads=heads, jobs=args.jobs, out=Path(tmp) / "results")
        grid_s = time.perf_counter() - start
        print(f"grid: {len(shots)} shot levels x {args.seeds} seeds x {len(heads)} heads, "
              f"--jobs {args.jobs}: {grid_s:.1f} s")
        # where the grid's time goes: each head's fit + score + AUC, summed over runs (single-threaded)
        grid_heads = run_grid(cache, GridSpec(shots, args.seeds, heads), jobs=args.jobs).seconds_by_head
        grid_means = {}
        import csv

        with open(Path(tmp) / "results" / "summary.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                grid_means[(row["head"], read_shots(row["shots"]))] = float(row["mean_auc"])
        if args.skip_naive:
            for name in heads:
                print(f"  {name:12s} {grid_heads[name]:10.1f} s (grid, summed over runs, 1 thread a run)")
            return
        start = time.perf_counter()
        naive_means, naive_heads = naive_loop(cache, shots, args.seeds, heads)
        naive_s = time.perf_counter() - start
        print(f"naive loop: {naive_s:.1f} s")
        print("seconds per head, summed over runs   grid (1 thread a run)   naive (default threads)")
        for name in heads:
            print(f"  {name:12s} {grid_heads[name]:10.1f} {naive_heads[name]:10.1f}")
        worst = max(abs(grid_means[k] - naive_means[k]) for k in naive_means)
        print(f"largest difference in a mean AUC between the two: {worst:.2e}")
        # the paper-mlp costs about the same in both loops (its scoring is dense fp32 matrix work at
        # this CPU's peak either way): were everything else free, the grid could be at best this fast
        if "paper-mlp" in heads:
            floor = grid_heads["paper-mlp"] / args.jobs
            print(f"paper-mlp alone in the grid: {grid_heads['paper-mlp']:.1f} CPU-s, >= {floor:.1f} s on {args.jobs} "
                  f"processes: speed-up ceiling {naive_s / floor:.1f}x")
    print(f"grid_s={grid_s:.1f} naive_s={naive_s:.1f} speedup={naive_s / grid_s:.1f}")


if __name__ == "__main__":
    main()
