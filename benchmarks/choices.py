"""The small implementation choices the code's comments justify, each timed against the
plain alternative it replaced, so the figures live here and in RESULTS.md, not in docstrings.

    python benchmarks/choices.py [--repeats 7]

Each line prints the choice, the alternative, both medians and their ratio. Single-threaded
(as a grid's workers run), on generated data of the sizes the code meets.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.special import expit  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from cxrprobe.data.images import Preprocessing, to_model_input  # noqa: E402
from cxrprobe.heads.adapter_fit import sigmoid  # noqa: E402
from cxrprobe.heads.logistic import fit_logistic, row_space  # noqa: E402
from cxrprobe.heads.logreg import C_GRID  # noqa: E402
from cxrprobe.heads.torch_fit import SCORE_ROWS, scores  # noqa: E402
from cxrprobe.models.mlp_head import PaperHead  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up: first-call allocations and lazy imports are not the choice being timed
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(choice: str, ours: float, alternative: str, theirs: float) -> None:
    ratio = f"{theirs / ours:5.2f}x" if theirs < 1000 * ours else "> 1000x"
    print(f"{choice:<46} {ours * 1e3:9.2f} ms   {alternative:<40} {theirs * 1e3:9.2f} ms   {ratio}")


def sorted_queries(rng: np.random.Generator, repeats: int) -> None:
    """metrics/auc.py: binary searches of the test positives among the sorted negatives."""
    scores_ = rng.normal(size=25_596).astype(np.float32)
    y = rng.random(25_596) < 0.05
    negatives, positives = np.sort(scores_[~y]), scores_[y]

    def search(queries: np.ndarray) -> None:
        np.searchsorted(negatives, queries, side="left")
        np.searchsorted(negatives, queries, side="right")

    ordered = median_seconds(lambda: search(np.sort(positives)), repeats)
    report("AUC: positives sorted, then searched", ordered, "searched unsorted",
           median_seconds(lambda: search(positives), repeats))


def tanh_sigmoid(rng: np.random.Generator, repeats: int) -> None:
    """heads/adapter_fit.py: the adapters' sigmoid on a support set's logits [224, 14]."""
    z = rng.normal(size=(224, 14)).astype(np.float32)  # the adapters' logits are float32
    loop = 300  # an adapter's epochs

    def run(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[], None]:
        return lambda: [f(z) for _ in range(loop)]

    report(f"sigmoid as tanh, [224, 14] x {loop}", median_seconds(run(sigmoid), repeats), "scipy.special.expit",
           median_seconds(run(expit), repeats))


def warm_started_search(rng: np.random.Generator, repeats: int) -> None:
    """heads/logreg.py: the C search, each C started from the nearest solution so far."""
    Y = np.zeros((224, 14))
    Y[np.arange(224), np.arange(224) % 14] = 1
    Z = rng.normal(size=(224, 512)) + 3 * Y @ rng.normal(size=(14, 512)) / np.sqrt(512)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    _, reduced = row_space(Z)

    def search(warm: bool) -> None:
        last = None
        for C in C_GRID:
            last = fit_logistic(reduced, Y, C, True, last if warm else None)

    report(f"logreg search over {len(C_GRID)} C, warm-started", median_seconds(lambda: search(True), repeats),
           "each C from zero", median_seconds(lambda: search(False), repeats))


def scoring_blocks(rng: np.random.Generator, repeats: int) -> None:
    """heads/torch_fit.py: a torch head scores the test split in blocks of SCORE_ROWS rows."""
    torch.manual_seed(0)
    head = PaperHead(in_dim=512, n_classes=14).eval()
    X = rng.normal(size=(25_596, 512)).astype(np.float32)

    def one_pass() -> None:
        with torch.inference_mode():
            head(torch.tensor(X))

    report(f"paper head on 25,596 rows, {SCORE_ROWS}-row blocks", median_seconds(lambda: scores(head, X), repeats),
           "one pass", median_seconds(one_pass, repeats))


def reducing_gap(rng: np.random.Generator, repeats: int) -> None:
    """data/images.py: Pillow's two-step resize of a 1024 px radiograph to 224 px, and how far
    it lands from the exact resize on the real NIH images the tests carry."""
    gap = Preprocessing().reducing_gap
    real = sorted((REPO / "tests" / "data" / "nih" / "images").glob("*.png"))
    images = [Image.open(path).convert("L") for path in real] or [
        Image.fromarray(rng.integers(0, 256, size=(1024, 1024), dtype=np.uint8), mode="L")]
    img = images[0]
    fast = median_seconds(lambda: img.resize((224, 224), Image.BICUBIC, reducing_gap=gap), repeats)
    exact = median_seconds(lambda: img.resize((224, 224), Image.BICUBIC), repeats)
    report(f"resize {img.size[0]} -> 224, reducing_gap={gap}", fast, "exact bicubic", exact)
    gaps = [np.abs(np.asarray(im.resize((224, 224), Image.BICUBIC, reducing_gap=gap), dtype=float)
                   - np.asarray(im.resize((224, 224), Image.BICUBIC), dtype=float)).mean() for im in images]
    print(f"{'':<46} mean |two-step - exact| over {len(images)} images: {np.mean(gaps):.3f} grey levels "
          f"(largest {max(gaps):.3f})")


def normalise_in_place(rng: np.random.Generator, repeats: int) -> None:
    """data/images.py: a grey batch to normalised 3-channel model input."""
    grey = torch.from_numpy(rng.integers(0, 256, size=(64, 224, 224), dtype=np.uint8))
    prep = Preprocessing()
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)

    def broadcast() -> torch.Tensor:
        return (grey[:, None].to(torch.float32) / 255.0 - mean) / std

    report("to_model_input, 64 x 224 px, written out", median_seconds(lambda: to_model_input(grey, prep,
                                                                                              torch.float32), repeats),
           "broadcast over a [b, 1, s, s] view", median_seconds(broadcast, repeats))


COLLECT = """
import gc, sys, time
import torch, scipy.stats, sklearn.linear_model, faiss
import cxrprobe.eval.runner
if sys.argv[1] == "freeze":
    gc.collect(); gc.freeze()
times = []
for _ in range(5):
    start = time.perf_counter(); gc.collect(); times.append(time.perf_counter() - start)
print(sorted(times)[2])
"""


def frozen_collection() -> None:
    """eval/runner.py: a worker freezes what its imports created before each task."""
    def seconds(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", COLLECT, mode], capture_output=True, text=True, check=True)
        return float(out.stdout)

    report("gc.collect() in a worker, imports frozen", seconds("freeze"), "not frozen", seconds("plain"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.set_num_threads(1)
    print(f"{'choice':<46} {'median':>12}   {'alternative':<40} {'median':>12}   ratio")
    with threadpool_limits(1):
        for bench in (sorted_queries, tanh_sigmoid, warm_started_search, scoring_blocks, reducing_gap,
                      normalise_in_place):
            bench(rng, args.repeats)
            gc.collect()
    frozen_collection()


if __name__ == "__main__":
    main()
