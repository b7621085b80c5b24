"""``cxrprobe fewshot`` as one call: validate, run the grid, write the results dir."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from cxrprobe.cores import usable_cores
from cxrprobe.errors import InputError
from cxrprobe.eval.options import at_least_one, check_protocol, check_shots
from cxrprobe.eval.runner import GridSpec, run_grid
from cxrprobe.heads.registry import check_heads
from cxrprobe.versions import package_versions


def run_fewshot(
    cache: Path, out: Path, shots: Sequence[int], seeds: int, heads: Sequence[str] | None = None,
    jobs: int | None = None, strict_shots: bool = False, progress: Callable[[int, int], None] | None = None,
    search: bool = False, protocol: str = "default", allow_undefined: bool = False,
) -> Path:
    """Run the grid and write ``out``; returns the summary.csv path. ``heads`` None is every
    head the cache can run; ``jobs`` None is one process per usable core."""
    from cxrprobe.cache.reader import FeatureCache
    from cxrprobe.report.results import check_results_dir, write_results

    check_protocol(protocol)
    shots = check_shots(shots)
    jobs = at_least_one(usable_cores() if jobs is None else jobs, "--jobs")
    with FeatureCache(cache) as opened:
        image_ids = opened.table.image_ids
        has_head = "head" in opened.file
    if protocol == "paper":
        if not has_head:
            raise InputError(f"the paper protocol continues training the adapted head, which {cache} does not hold "
                             "(embed with --checkpoint RUN_DIR)")
        seeds, heads = 1, ("adapted", "paper-mlp")  # one draw per N, as the paper's code ran
    spec = GridSpec(shots=shots, seeds=at_least_one(seeds, "--seeds"), heads=check_heads(heads, has_head),
                    strict_shots=strict_shots, search=search, protocol=protocol, allow_undefined=allow_undefined)
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
