"""``cxrprobe fewshot`` as one call: validate, run the grid, write the results dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from cxrprobe.cores import usable_cores
from cxrprobe.errors import InputError
from cxrprobe.eval.options import (
    ALL_SHOTS, Shots, at_least_one, at_least_zero, check_protocol, check_shots, check_support, parse_normals,
)
from cxrprobe.eval.runner import TEST_BOOTSTRAP_SEED, VALIDATION_SHOTS_MAX, GridSpec, run_grid
from cxrprobe.heads.registry import check_heads
from cxrprobe.versions import package_versions


def run_fewshot(
    cache: Path, out: Path, shots: Sequence[Shots], seeds: int, heads: Sequence[str] | None = None,
    jobs: int | None = None, strict_shots: bool = False, progress: Callable[[int, int], None] | None = None,
    search: bool = False, protocol: str = "default", allow_undefined: bool = False, support: str = "per-finding",
    normals: str | int = "N", test_bootstrap: int = 0,
) -> Path:
    """Run the grid and write ``out``; returns the summary.csv path. ``heads`` None is every
    head the cache can run; ``jobs`` None is one process per usable core."""
    from cxrprobe.cache.reader import FeatureCache
    from cxrprobe.report.results import check_results_dir, write_results

    check_protocol(protocol)
    normals = parse_normals(normals)
    check_support(support, normals)
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
                    strict_shots=strict_shots, search=search, protocol=protocol, allow_undefined=allow_undefined,
                    support=support, normals=normals, test_bootstrap=at_least_zero(test_bootstrap, "--test-bootstrap"))
    out = Path(out)
    check_results_dir(out)
    result = run_grid(Path(cache), spec, jobs=jobs, progress=progress)
    attrs = result.cache_attrs
    encoder = encoder_record(attrs)
    config = {
        "command": "fewshot",
        "protocol": protocol,
        "label": f"{attrs.get('model')}/{attrs.get('pretrained')} on {attrs.get('dataset')}; "
                 + ("the paper's protocol (adapted head trained further, one draw)" if protocol == "paper" else "default protocol")
                 + (f"; {encoder['summary']}" if encoder["adapted"] else ""),
        "encoder": encoder,
        "cache": str(cache),
        "cache_fingerprint": {k: attrs.get(k) for k in ("weights_sha256", "dataset_fingerprint", "manifest_sha256", "model", "pretrained")},
        "shots": list(spec.shots),
        "seeds": list(range(spec.first_seed, spec.first_seed + spec.seeds)),
        "heads": list(spec.heads),
        "strict_shots": strict_shots,
        "support": {"design": support, "normals": 0 if protocol == "paper" else normals},
        "test_bootstrap": None if not test_bootstrap else {
            "resamples": test_bootstrap, "unit": "patient", "stratified_by": "any positive image",
            "seed": TEST_BOOTSTRAP_SEED,
            "what": "seed_and_test_ci95 in summary.csv: each replicate resamples the seeds and the test patients",
        },
        "full_data": None if ALL_SHOTS not in spec.shots else {
            "images": len(next(s for s in result.supports if s.shots == ALL_SHOTS).rows),
            "what": "shots 'all': every training image, one draw (the supervised reference point); heads whose fit "
                    "is random are refitted at every seed, the others fitted once, their run standing for every "
                    "seed; a search's validation set is the first seed's "
                    f"{VALIDATION_SHOTS_MAX}-shot one",
        },
        "not_fitted": result.not_fitted,
        "search_on_validation": search,
        "allow_undefined": allow_undefined,
        "undefined_findings": result.undefined_findings,
        "test_images": result.n_test,
        "labelled_images_used": {
            "adaptation": encoder["labelled_images"],
            "support_per_run_max": max(len(s.rows) for s in result.supports),
            "validation_per_run_max": result.validation_images,
        },
        "versions": package_versions(),
        "note": "CIs are t-based over seeds (support-set draws); " + (
            encoder["summary"] + ": " + encoder["label_efficiency"] if encoder["adapted"]
            else "zeroshot uses text only, no labelled image"
        ) + "; " + CL2N_NOTE,
    }
    write_results(out, result, spec, protocol, image_ids, config)
    return out / "summary.csv"


CL2N_NOTE = ("prototype and knn centre every embedding on the mean of the unlabelled training images "
             "(CL2N), which uses their embeddings but none of their labels")


def encoder_record(attrs: dict) -> dict:
    """What the cache's encoder learned from labels: nothing (as pretrained), or an adapt run's
    labelled images, with the findings it held out. Few-shot curves measure label efficiency
    only where the encoder never saw the labels."""
    if not attrs.get("checkpoint"):
        return {"adapted": False, "labelled_images": 0, "held_out": [], "summary": "encoder as pretrained",
                "label_efficiency": "every finding's curve counts every labelled image used"}
    try:
        record = json.loads(str(attrs.get("adaptation", "{}")))
    except ValueError:
        record = {}
    record = record if isinstance(record, dict) else {}
    labelled, held_out = record.get("labelled_images"), record.get("held_out")
    count = f"{labelled:,}" if isinstance(labelled, int) else "an unrecorded number of"
    held = ", ".join(held_out) if held_out else ""
    return {
        "adapted": True, "labelled_images": labelled, "held_out": held_out, "run": attrs.get("checkpoint"),
        "summary": f"encoder adapted with {count} labelled images" + (f" (held out: {held})" if held else ""),
        "label_efficiency": (f"few-shot figures measure label efficiency only for the held-out findings ({held})"
                             if held else "no finding was held out, so no few-shot curve measures label efficiency"),
    }
