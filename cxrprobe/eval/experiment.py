"""``cxrprobe fewshot`` as one call: validate, run the grid, write the results dir."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cxrprobe.errors import InputError
from cxrprobe.eval.runner import PROTOCOLS, GridSpec, parse_shots, run_grid
from cxrprobe.heads import parse_heads
from cxrprobe.versions import package_versions


def run_fewshot(
    cache: Path, out: Path, shots: str, seeds: int, heads: str, jobs: int, strict_shots: bool,
    progress: Callable[[int, int], None] | None = None, search: bool = False, protocol: str = "default",
    allow_undefined: bool = False,
) -> Path:
    """Run the grid and write ``out``; returns the summary.csv path."""
    from cxrprobe.cache.reader import FeatureCache
    from cxrprobe.report.results import check_results_dir, write_results


    with FeatureCache(cache) as opened:
        image_ids = opened.table.image_ids
        has_head = "head" in opened.file
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if protocol == "paper":
        if not has_head:
            raise InputError(f"the paper protocol continues training the adapted head, which {cache} does not hold "
                             "(embed with --checkpoint RUN_DIR)")
        seeds, heads = 1, "adapted,paper-mlp"  # one draw per N, as the paper's code ran
    spec = GridSpec(shots=parse_shots(shots), seeds=_positive(seeds, "--seeds"), heads=parse_heads(heads, has_head),
                    strict_shots=strict_shots, search=search, protocol=protocol, allow_undefined=allow_undefined)
    _positive(jobs, "--jobs")
    out = Path(out)
    check_results_dir(out)
    result = run_grid(Path(cache), spec, jobs=jobs, progress=progress)
    attrs = result.cache_attrs
    config = {
        "command": "fewshot",
        "protocol": protocol,
        "label": f"{attrs.get('model')}/{attrs.get('pretrained')} on {attrs.get('dataset')}; "
                 + ("the paper's protocol (adapted head trained further, one draw)" if protocol == "paper" else "default protocol"),
        "cache": str(cache),
        "cache_fingerprint": {k: attrs.get(k) for k in ("weights_sha256", "dataset_fingerprint", "manifest_sha256", "model", "pretrained")},
        "shots": list(spec.shots),
        "seeds": list(range(spec.first_seed, spec.first_seed + spec.seeds)),
        "heads": list(spec.heads),
        "strict_shots": strict_shots,
        "search_on_validation": search,
        "allow_undefined": allow_undefined,
        "undefined_findings": result.undefined_findings,
        "test_images": result.n_test,
        "labelled_images_used": {
            "adaptation": 0,
            "support_per_run_max": max(len(s.rows) for s in result.supports),
            "validation_per_run_max": result.validation_images,
        },
        "versions": package_versions(),
        "note": "CIs are t-based over seeds (support-set draws); zeroshot uses text only, no labelled image.",
    }
    write_results(out, result, spec, protocol, image_ids, config)
    return out / "summary.csv"


def _positive(value: int, name: str) -> int:
    if value < 1:
        raise InputError(f"{name} must be at least 1, got {value}")
    return value
