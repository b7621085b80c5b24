"""The ``cxrprobe`` command line: parse, validate, call the API, print.

Errors end as one line on stderr (``cxrprobe: error: ...``) and an exit status: 2 for usage
and input errors, 1 for failures of the run, 130 for Ctrl-C. Results go to stdout; notes and
progress to stderr, progress only on a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cxrprobe.cli_dataset import with_dataset_flags
from cxrprobe.cli_runtime import error_line, guarded, notes, progress_bar, say
from cxrprobe.errors import InputError
from cxrprobe.eval.options import (
    at_least_one,
    at_least_zero,
    check_aggregate,
    check_protocol,
    check_support,
    parse_normals,
    parse_shots,
)
from cxrprobe.heads.registry import REGISTRY, head_names, list_heads, split_heads
from cxrprobe.launch import launch_place

app = typer.Typer(
    name="cxrprobe",
    help="Feature cache and few-shot probes for CLIP encoders on chest X-rays.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


ALLOW_UNDEFINED = ("Go on when a finding's test images are all negative (or all positive): its AUC is left empty "
                   "and means are over the other findings. Without it, that is an error.")


AGGREGATE = ("How test images are scored: image (each on its own), study-max or study-mean (a study from its "
             "images' highest or mean score, for test labels given per study).")


@app.command()
@guarded
@with_dataset_flags
def embed(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Dataset folder (NIH: metadata CSV, split lists, images anywhere below; CheXpert: train.csv, valid.csv and the images).")],
    out: Annotated[Path, typer.Option("--out", help="Cache file to write (HDF5).")],
    model: Annotated[str, typer.Option(help="open_clip model name, a bundled one (cxrprobe-tiny), hf-hub:ORG/NAME (from the local Hugging Face cache), local-dir:FOLDER (an open_clip_config.json and weights), or xrv:NAME (a torchxrayvision classifier, image-only).")] = "ViT-B-32",
    pretrained: Annotated[str, typer.Option(help="open_clip weights tag, a local weights file, or 'none'.")] = "openai",
    encoder: Annotated[Optional[str], typer.Option(help="A preset (cxrprobe encoders lists them): sets the model and its authors' preprocessing; weights still come from --pretrained.")] = None,
    features: Annotated[Optional[str], typer.Option(help="projected (a CLIP model's image-text space, where text heads work) or pooled (before the projection: the CLIP paper's linear-probe features, image-only). Default: the encoder's own.")] = None,
    device: Annotated[str, typer.Option(help="auto (the first GPU if torch can use one), cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    workers: Annotated[Optional[int], typer.Option(help="Decoding processes (default: one per usable core).")] = None,
    precision: Annotated[str, typer.Option(help="auto (fp16 autocast on CUDA, fp32 on the CPU), fp32, fp16 (CUDA) or bf16 (CPU, or a GPU of compute capability 8.0+).")] = "auto",
    dtype: Annotated[str, typer.Option(help="Stored embedding type: float16 or float32.")] = "float16",
    limit: Annotated[Optional[int], typer.Option(help="Embed only the first N images present.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run (or check a finished one).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over, replacing an existing cache when done.")] = False,
    require_all: Annotated[bool, typer.Option("--require-all", help="Fail when a metadata image has no file.")] = False,
    checkpoint: Annotated[Optional[Path], typer.Option(help="An adapt run dir: embed with its encoder (model and weights from the run) and store its head's logits.")] = None,
    shard: Annotated[Optional[str], typer.Option(help="I/N: embed shard I (from 0) of N into its own file beside --out (job arrays); under torchrun or srun the rank and world size are read from the environment. The last shard to finish merges them (or cxrprobe merge).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes or progress on stderr.")] = False,
    data: dict | None = None,  # the dataset flags (with_dataset_flags)
) -> None:
    """Embed every image of a dataset once into an HDF5 feature cache."""
    from cxrprobe.commands.embed import EmbedOptions
    from cxrprobe.commands.embed import embed as run_embed

    if resume and force:
        raise InputError("--resume and --force exclude each other")
    options = EmbedOptions(
        data_dir=data_dir, out=out, model=model, pretrained=pretrained, encoder=encoder, features=features, device=device,
        batch_size=batch_size, workers=workers, precision=precision, dtype=dtype, limit=limit,
        resume=resume, force=force, require_all=require_all, checkpoint=checkpoint, shard=shard,
        **data,
    )
    notify = notes("cxrprobe", quiet)
    with progress_bar("embedding", quiet) as progress:
        result = run_embed(options, notify=notify, progress=progress)
    if result.already_complete:
        typer.echo(f"{result.out}: complete, {result.rows:,} images; nothing to do")
        return
    if result.unmerged:
        typer.echo(f"{result.out}: {result.rows:,} images embedded in {result.unmerged} ({result.seconds:.1f} s)")
        return
    typer.echo(
        f"wrote {result.out}: {result.rows:,} images embedded, {result.failures:,} failed to decode, "
        f"{result.missing:,} of {result.metadata_rows:,} metadata rows without an image file "
        f"({result.seconds:.1f} s)"
    )


@app.command()
@guarded
def merge(
    cache: Annotated[Path, typer.Argument(help="The cache a sharded embed (--shard, torchrun, srun) writes: its CACHE.shard-I-of-N.partial files are merged into it.")],
) -> None:
    """Merge the finished shards of a sharded embed into its cache (the last shard to finish does it itself)."""
    from cxrprobe.cache.ranks import merge_shards

    summary = merge_shards(cache)
    typer.echo(f"wrote {cache}: {summary.rows:,} images embedded, {summary.failures:,} failed to decode")


@app.command()
@guarded
def info(
    cache: Annotated[Path, typer.Argument(help="Cache file (or an embed's .partial working file).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Describe a cache: model, preprocessing, rows per split, labels, completeness, failures."""
    from cxrprobe.cache.ranks import shard_progress
    from cxrprobe.cache.reader import FeatureCache
    from cxrprobe.report.info import render_info, shards_text

    sharded = None if cache.exists() else shard_progress(cache)
    if sharded is not None:  # a sharded embed still running: each shard's progress
        typer.echo(json.dumps(sharded, indent=2) if as_json else shards_text(sharded))
        return
    with FeatureCache(cache, require_complete=False) as opened:
        summary = opened.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        render_info(summary)


HEAD_NAMES = ", ".join(head_names())
SEARCHING = ", ".join(f"{i.name}: {i.searches}" for i in REGISTRY.values() if i.search_when == "--search")
JOBS = "Parallel processes (default: one per usable core); results are the same for any value."


@app.command()
@guarded
def fewshot(
    cache: Annotated[Path, typer.Option("--cache", help="Feature cache written by cxrprobe embed.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder to create (must be new or empty).")],
    shots: Annotated[str, typer.Option(help="Shot levels: labelled images per finding; all: every training image (the full-data reference point, one draw).")] = "1,2,4,8,16",
    seeds: Annotated[int, typer.Option(help="Support-set draws per shot level.")] = 20,
    heads: Annotated[str, typer.Option(help=f"Comma-separated heads, or all. Heads: {HEAD_NAMES} "
                                            "(cxrprobe heads describes each).")] = "all",
    jobs: Annotated[Optional[int], typer.Option(help=JOBS, show_default=False)] = None,
    strict_shots: Annotated[bool, typer.Option("--strict-shots", help="Fail when a finding has fewer training images than shots.")] = False,
    protocol: Annotated[str, typer.Option(help="default (honest), or paper: the paper's code as it ran (adapted head trained further, one draw per N).")] = "default",
    search: Annotated[bool, typer.Option("--search", help=f"Let heads that can ({SEARCHING}) choose hyperparameters on a few-shot set of validation patients, never on test.")] = False,
    allow_undefined: Annotated[bool, typer.Option("--allow-undefined", help=ALLOW_UNDEFINED)] = False,
    support: Annotated[str, typer.Option(help="Support-set design: per-finding (N positives per finding, plus normals), pos-neg (at least N positives and N negatives per finding, greedily pruned, as MedIMeta), or realistic (15 N images by the training label marginal, every finding once, as SS-Text).")] = "per-finding",
    normals: Annotated[str, typer.Option(help="\"No Finding\" images in a per-finding set: N (as many as shots), natural (their share of the training pool), or a number (0: none).")] = "N",
    test_bootstrap: Annotated[int, typer.Option(help="Also resample the test patients this many times in every run: summary.csv then gives a CI over seeds and test sampling together, beside the seed CI (costs about that many AUC passes a run).")] = 0,
    aggregate: Annotated[str, typer.Option(help=AGGREGATE)] = "image",
    test_cache: Annotated[Optional[Path], typer.Option("--test-cache", help="Score another dataset's cache (same weights) instead: its test split, on the classes the two share (cross-dataset).")] = None,
    test_labels: Annotated[Optional[Path], typer.Option("--test-labels", help="Score the cache's test images against another label table of them, such as google2019_nih-chest-xray-labels.csv.gz (radiologist-adjudicated NIH labels).")] = None,
    backend: Annotated[str, typer.Option(help="local (a process pool on this machine) or dask (the tasks on an existing dask.distributed cluster, through joblib's Dask backend; the same results).")] = "local",
    scheduler: Annotated[Optional[str], typer.Option(help="--backend dask: the scheduler's address (default: DASK_SCHEDULER_ADDRESS).")] = None,
    class_map: Annotated[Optional[Path], typer.Option("--class-map", help="With --test-cache or --test-labels: a CSV of test_class,cache_class pairs (a test class with several rows is scored by the highest; an empty cache_class leaves it out). Default: the shipped synonyms, or for --test-labels the shipped Google 2019 NIH map.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Few-shot probes on a cache: shots x seeds x heads, mean AUC with 95% CIs over seeds."""
    # Every option is checked before torch, FAISS or scikit-learn is imported.
    shot_levels, head_list = parse_shots(shots), split_heads(heads)
    check_protocol(protocol)
    normal_count = parse_normals(normals)
    check_support(support, normal_count)
    at_least_zero(test_bootstrap, "test_bootstrap")
    check_aggregate(aggregate)
    at_least_one(seeds, "seeds")
    if jobs is not None:
        at_least_one(jobs, "jobs")
    from cxrprobe.commands.fewshot import run_fewshot
    from cxrprobe.report.plots import summary_curves
    from cxrprobe.report.tables import render_result

    with progress_bar("few-shot runs", quiet) as progress:
        result = run_fewshot(cache, shots=shot_levels, seeds=seeds, heads=head_list, jobs=jobs,
                             strict_shots=strict_shots, progress=progress, search=search, protocol=protocol,
                             allow_undefined=allow_undefined, support=support, normals=normal_count,
                             test_bootstrap=test_bootstrap, aggregate=aggregate, test_cache=test_cache,
                             test_labels=test_labels, class_map=class_map, backend=backend, scheduler=scheduler,
                             out=out)
    for note in (result.config["test_set"] or {}).get("notes", []):
        typer.echo(f"cxrprobe fewshot: {note}", err=True)
    render_result(summary_curves(result.summary), result.config)
    typer.echo(f"results in {out} (summary.csv, runs.csv, per_class.csv, paired.csv, supports.csv, auc_vs_shots.png)")


@app.command("heads")
@guarded
def list_heads_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Every few-shot head: what it is, what it needs, what --search selects, its defaults and their sources."""
    if as_json:
        typer.echo(json.dumps(list_heads(), indent=2))
        return
    from cxrprobe.report.heads import heads_text

    typer.echo(heads_text(list_heads()))


@app.command("encoders")
@guarded
def list_encoders_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Encoder presets for embed --encoder: the model, where its weights come from, its preprocessing, what it was trained on."""
    from cxrprobe.models.encoders.presets import presets

    listed = [preset.as_dict() for preset in presets()]
    if as_json:
        typer.echo(json.dumps(listed, indent=2))
        return
    from cxrprobe.report.encoders import encoders_text

    typer.echo(encoders_text(listed), nl=False)


@app.command()
@guarded
@with_dataset_flags
def adapt(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Dataset folder, as embed reads it (NIH, CheXpert, MIMIC-CXR-JPG or --dataset csv).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoints, metrics.csv, config.json.")],
    model: Annotated[str, typer.Option(help="open_clip ViT model name.")] = "ViT-B-32",
    pretrained: Annotated[str, typer.Option(help="Weights tag, local file, or none.")] = "openai",
    unfreeze: Annotated[int, typer.Option(help="Top visual blocks to train (plus ln_post and proj).")] = 3,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on validation AUC, patience 5).")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    hold_out: Annotated[str, typer.Option(help="Comma-separated findings whose labels adaptation never sees.")] = "",
    device: Annotated[str, typer.Option(help="auto (the first GPU if torch can use one), cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast on GPUs of compute capability 8.0+, fp16 with loss scaling on older ones, fp32 on the CPU), fp32, fp16 or bf16.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Decoding and augmentation processes (default: the usable cores, one fewer on CUDA).", show_default=False)] = None,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N train and N val images.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Start over in a folder that holds a run.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes on stderr.")] = False,
    data: dict | None = None,  # the dataset flags (with_dataset_flags)
) -> None:
    """The paper's partial CLIP adaptation (top blocks + MLP head), resumable, selected on validation only."""
    from cxrprobe.commands.adapt import AdaptOptions, parse_hold_out
    from cxrprobe.commands.adapt import adapt as run_adapt

    if resume and force:
        raise InputError("--resume and --force exclude each other")
    options = AdaptOptions(
        data_dir=data_dir, out=out, model=model, pretrained=pretrained, unfreeze=unfreeze, epochs=epochs,
        batch_size=batch_size, hold_out=parse_hold_out(hold_out), device=device, precision=precision,
        workers=workers, limit=limit, resume=resume, force=force,
        **data,
    )
    summary = run_adapt(options, notify=notes("cxrprobe adapt", quiet))
    if launch_place().first:  # one line for a torchrun launch, not one a process
        typer.echo(f"{out}: {summary['epochs_run']} epochs, best validation mean AUC {summary['best_val_auc']:.4f} "
                   f"at epoch {summary['best_epoch']} (best.pt; last.pt resumes)")


@app.command()
@guarded
def zeroshot(
    cache: Annotated[Path, typer.Option("--cache", help="Feature cache with text embeddings.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder to create (must be new or empty).")],
    negative: Annotated[str, typer.Option(help="pair: 'A chest X-ray showing no {finding}'; paper: 'No finding'.")] = "pair",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples of the test patients (stratified).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    prompts: Annotated[Optional[Path], typer.Option(help="JSON of prompts per finding, encoded with the cache's model on the CPU.")] = None,
    allow_undefined: Annotated[bool, typer.Option("--allow-undefined", help=ALLOW_UNDEFINED)] = False,
    aggregate: Annotated[str, typer.Option(help=AGGREGATE)] = "image",
) -> None:
    """Zero-shot AUC from text prompts per finding and their mean, with 95% CIs from resampling test patients."""
    from cxrprobe.commands.zeroshot import run_zeroshot
    from cxrprobe.report.tables import render_zeroshot

    result = run_zeroshot(cache, negative=negative, bootstrap=bootstrap, seed=seed, prompts_file=prompts,
                          allow_undefined=allow_undefined, aggregate=aggregate, out=out)
    if result.config["encoder"]["contamination"]:  # above the table it qualifies
        typer.echo(f"warning: {result.config['encoder']['contamination']}")
    render_zeroshot(result.rows, bootstrap)
    typer.echo(f"results in {out} (zeroshot.csv, config.json)")


@app.command()
@guarded
def report(
    results: Annotated[list[Path], typer.Argument(help="One or more results dirs written by cxrprobe fewshot.")],
    plot: Annotated[Optional[Path], typer.Option(help="Also draw every curve into this .png.")] = None,
) -> None:
    """Re-render the summary tables of results dirs, side by side, and optionally one plot."""
    from cxrprobe.report.compare import combined_curves, contamination_notes, load_results, write_plot
    from cxrprobe.report.tables import render_curves

    loaded = load_results(results)
    for note in contamination_notes(results):  # above the table it qualifies
        typer.echo(f"warning: {note}")
    render_curves(combined_curves(loaded))
    if plot is not None:
        write_plot(loaded, plot)
        typer.echo(f"plot written to {plot}")


@app.command()
@guarded
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's data, cache and results.")] = Path("cxrprobe-demo"),
    jobs: Annotated[Optional[int], typer.Option(help=JOBS, show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No notes on stderr.")] = False,
) -> None:
    """The whole pipeline offline on generated data: dataset, embed, few-shot grid, report."""
    if jobs is not None:
        at_least_one(jobs, "jobs")
    from cxrprobe.commands.demo import run_demo
    from cxrprobe.report.plots import summary_curves
    from cxrprobe.report.tables import render_result

    paths = run_demo(out, jobs, notify=notes("cxrprobe demo", quiet))
    render_result(summary_curves(paths.fewshot.summary), paths.fewshot.config)
    typer.echo(
        f"Random weights: zeroshot is at chance by design; the learned heads rise with shots.\n"
        f"Look at: {paths.results / 'auc_vs_shots.png'} (plot), {paths.results / 'summary.csv'} (table), "
        f"`cxrprobe info {paths.cache}` (the cache)."
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every usage error becomes one line and exit status 2."""
    # Idle OpenMP threads sleep instead of spinning, leaving the cores to the decoding
    # workers (benchmarks/RESULTS.md, embed throughput).
    # Set before torch is imported; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Libraries' log records (open_clip's, the hub's warnings) would print through logging's
    # last-resort handler and break the one-line errors; a program that configured logging
    # itself keeps its own handlers. Library calls change no logger: this is the CLI's choice.
    if not logging.getLogger().handlers:
        logging.getLogger().addHandler(logging.NullHandler())
    try:
        code = app(args=argv, prog_name="cxrprobe", standalone_mode=False)
    except typer.Abort:
        say("cxrprobe: interrupted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors are click's (or, from typer 0.25 on, typer's vendored click's): both
        # carry format_message() and exit_code.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        command = getattr(ctx, "info_name", None)
        hint = f" (see cxrprobe {command} --help)" if command and command != "cxrprobe" else ""
        say(error_line(exc.format_message()) + hint)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
