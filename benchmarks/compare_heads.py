"""Every head on one cache: shots x seeds, mean AUC with 95% CIs, paired differences against
zeroshot and paper-mlp, each head's cost, a plot; writes its section of benchmarks/RESULTS.md.

    python benchmarks/compare_heads.py [--cache CACHE.h5] [--shots 1,2,4,8,16] [--seeds 20]
                                       [--jobs 2] [--heads all] [--no-write]

Without --cache it builds the full-size synthetic cache (the real 112,120 NIH rows, splits and
patients; 512-d generated embeddings). The grid is the one `cxrprobe fewshot` runs (same
support sets for every head at a (shots, seed), validation-free defaults). The time reported
per head is its fit + score + AUC seconds summed over runs, each run single-threaded; the grid
time is wall-clock for the whole grid with --jobs processes. The last line reads
``grid_s=<seconds> heads=<n> runs=<n>``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_cache import add_cache_options, cache_or_synthetic

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.eval.options import parse_shots
from cxrprobe.eval.runner import GridResult, GridSpec, run_grid
from cxrprobe.heads import HEADS, parse_heads
from cxrprobe.metrics.auc import mean_auc
from cxrprobe.metrics.stats import mean_ci, paired_difference
from cxrprobe.report.plots import plot_curves

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
PLOT = REPO / "benchmarks" / "compare_heads.png"
START, END = "<!-- compare_heads:start -->", "<!-- compare_heads:end -->"
REFERENCES = ("zeroshot", "paper-mlp")


def run_means(result: GridResult) -> dict[tuple[str, int], dict[int, float]]:
    """(head, shots) -> {seed: mean AUC over findings}."""
    means: dict[tuple[str, int], dict[int, float]] = {}
    for run in result.runs:
        means.setdefault((run.head, run.shots), {})[run.seed] = mean_auc(run.aucs)
    return means


def summary_markdown(by_head: dict[str, list[tuple[int, float, float, float, int]]], shots: tuple[int, ...]) -> str:
    """The table of ``curves(result)``: mean ± CI half-width per head and shot."""
    lines = ["| head | " + " | ".join(f"{n}-shot" for n in shots) + " |", "|---|" + "---|" * len(shots)]
    for head, points in by_head.items():
        cells = {n: f"{mean:.3f} ± {(high - low) / 2:.3f}" if np.isfinite(low) else f"{mean:.3f}"
                 for n, mean, low, high, _ in points}
        lines.append(f"| {head} | " + " | ".join(cells[n] for n in shots) + " |")
    return "\n".join(lines)


def paired_markdown(result: GridResult, heads: tuple[str, ...], shots: tuple[int, ...], reference: str) -> str:
    means = run_means(result)
    lines = ["| head | " + " | ".join(f"{n}-shot" for n in shots) + " |", "|---|" + "---|" * len(shots)]
    for head in heads:
        if head == reference:
            continue
        cells = []
        for n in shots:
            seeds = sorted(means[(head, n)])
            diff, _, _, p, _ = paired_difference(np.array([means[(head, n)][s] for s in seeds]),
                                                 np.array([means[(reference, n)][s] for s in seeds]))
            cells.append(f"{diff:+.3f} (p={p:.1g})" if np.isfinite(p) else f"{diff:+.3f}")
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_markdown(result: GridResult, heads: tuple[str, ...], n_runs: int) -> str:
    lines = ["| head | seconds, all runs | ms a run |", "|---|---|---|"]
    for head in sorted(heads, key=lambda h: -result.seconds_by_head[h]):
        seconds = result.seconds_by_head[head]
        per_run = f"{1000 * seconds / n_runs:.0f}" if HEADS[head].needs_support else f"{1000 * seconds:.0f} (scored once)"
        lines.append(f"| {head} | {seconds:.1f} | {per_run} |")
    return "\n".join(lines)


def section(result: GridResult, by_head: dict[str, list], spec: GridSpec, grid_s: float, jobs: int,
            cache_label: str) -> str:
    heads, shots = spec.heads, spec.shots
    n_runs = len(shots) * spec.seeds
    references = [r for r in REFERENCES if r in heads]
    parts = [
        START,
        "## All heads compared — `benchmarks/compare_heads.py`",
        "",
        f"{cache_label}; shots {','.join(map(str, shots))} x {spec.seeds} seeds x {len(heads)} heads, "
        f"validation-free defaults, `--jobs {jobs}` on the 2-core CPU machine, "
        f"{time.strftime('%Y-%m-%d')}. Whole grid: **{grid_s:.1f} s** wall-clock (target: at most 60 s).",
        "",
        "**Read the ranking with care.** Synthetic embeddings come from a simple generative model "
        "(findings shift the embedding along fixed directions, text embeddings are noisy copies of "
        "those directions), so they rank heads only roughly: a head that matches the generator's "
        "assumptions (linear, Gaussian) is favoured. The real ranking needs a cache of real images "
        "embedded by a real encoder; run this script with `--cache` on one.",
        "",
        f"Mean AUC over the 14 findings on the {result.n_test:,} test images, mean ± half-width of "
        f"the t-based 95% CI over {spec.seeds} seeds (support-set draws):",
        "",
        summary_markdown(by_head, shots),
    ]
    for reference in references:
        parts += ["", f"Paired difference in mean AUC against **{reference}** on the same seeds "
                  "(paired t-test p-value; positive: the head is better):", "",
                  paired_markdown(result, heads, shots, reference)]
    parts += [
        "",
        "Cost per head: fit + score every test row + exact AUC, summed over all runs, each run "
        "single-threaded; a head whose scores ignore the support set is scored once for the grid:",
        "",
        cost_markdown(result, heads, n_runs),
        "",
        "![mean AUC against shots, every head](compare_heads.png)",
        "",
        f"    grid_s={grid_s:.1f} heads={len(heads)} runs={n_runs}",
        END,
    ]
    return "\n".join(parts) + "\n"


def write_section(text: str, path: Path = RESULTS) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END) + "\n?", re.S)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(path)


def curves(result: GridResult) -> dict[str, list[tuple[int, float, float, float, int]]]:
    out: dict[str, list] = {}
    for (head, shots), by_seed in run_means(result).items():
        mean, _, low, high, n = mean_ci(np.array(list(by_seed.values())))
        out.setdefault(head, []).append((shots, mean, low, high, n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_options(parser)
    parser.add_argument("--shots", default="1,2,4,8,16")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--heads", default="all")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and the plot alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_or_synthetic(args, Path(tmp))
        label = (f"Cache {cache}" if args.cache is not None else
                 "Full-size synthetic cache (the real 112,120 NIH rows, splits and patients; 512-d generated embeddings)")
        with FeatureCache(cache) as opened:
            has_head = "head" in opened.file
        spec = GridSpec(shots=parse_shots(args.shots), seeds=args.seeds, heads=parse_heads(args.heads, has_head))
        start = time.perf_counter()
        result = run_grid(cache, spec, jobs=args.jobs)
        grid_s = time.perf_counter() - start
    by_head = curves(result)
    text = section(result, by_head, spec, grid_s, args.jobs, label)
    print(text.replace(START + "\n", "").replace(END + "\n", ""))
    if not args.no_write:
        write_section(text)
        plot_curves(by_head, PLOT, "every head, default settings")
        print(f"wrote {RESULTS} and {PLOT}")
    print(f"grid_s={grid_s:.1f} heads={len(spec.heads)} runs={len(spec.shots) * spec.seeds}")


if __name__ == "__main__":
    main()
