"""Terminal rendering of ``cxrprobe info``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cxrprobe.data.table import SPLITS
from cxrprobe.labels import DISPLAY_NAMES, FINDINGS

MAX_FAILURES_SHOWN = 20


ORIGINS = {"bundled": ", the NIH metadata bundled with cxrprobe", "data dir": ", from the data dir"}


def _origin(summary: dict) -> str:
    """Where the metadata came from; caches written before this was recorded say nothing."""
    return ORIGINS.get(summary.get("metadata_origin"), "")


def _temperature(summary: dict) -> str:
    if summary.get("logit_scale") is None:
        return "logit scale not recorded (a cache from before it was): heads read it as 100, OpenAI CLIP's"
    bias = summary.get("logit_bias") or 0.0
    return f"logit scale {summary['logit_scale']:.4g}" + (f", logit bias {bias:.4g}" if bias else "")


def render_info(summary: dict, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    status = "complete" if summary["complete"] else "INCOMPLETE"
    progress = summary.get("in_progress")
    if progress:
        status += f" (working file: {progress['rows_done']:,} of {progress['rows_total']:,} rows done)"
    prep = summary["preprocessing"]
    console.print(f"[bold]{summary['path']}[/bold]  {status}")
    console.print(
        f"model {summary['model']} / {summary['pretrained']}  (weights sha256 {str(summary['weights_sha256'])[:12]}…)\n"
        f"embeddings {summary['rows']:,} x {summary['embed_dim']} {summary['dtype']}, "
        f"{'L2-normalised' if summary['l2_normalised'] else 'raw (not normalised)'}, precision {summary['precision']}\n"
        f"preprocessing {prep.get('image_size')} px, {prep.get('resize_mode')} resize, {prep.get('interpolation')}, "
        f"mean {tuple(round(v, 4) for v in prep.get('mean', []))}, std {tuple(round(v, 4) for v in prep.get('std', []))}\n"
        f"dataset {summary['dataset']} ({summary['label_source']}{_origin(summary)}), "
        f"fingerprint {str(summary['dataset_fingerprint'])[:12]}…\n"
        f"metadata rows {summary['metadata_rows']:,}, without an image file {summary['missing_images']:,}, "
        f"failed to decode {len(summary['failures']):,}; text prompts {summary['text_prompts']}, "
        f"{_temperature(summary)}\n"
        f"created {summary['created']}"
    )
    table = Table(title="images per split and finding")
    table.add_column("")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_row("images", *[f"{summary['splits'][s]['images']:,}" for s in SPLITS])
    table.add_row("patients", *[f"{summary['splits'][s]['patients']:,}" for s in SPLITS])
    for name in FINDINGS:
        table.add_row(DISPLAY_NAMES[name], *[f"{summary['splits'][s]['labels'][name]:,}" for s in SPLITS])
    console.print(table)
    failures = summary["failures"]
    if failures:
        console.print(f"[bold]failed to decode ({len(failures)})[/bold]")
        for item in failures[:MAX_FAILURES_SHOWN]:
            console.print(f"  {item['image_id']}: {item['reason']}")
        if len(failures) > MAX_FAILURES_SHOWN:
            console.print(f"  … and {len(failures) - MAX_FAILURES_SHOWN} more (cxrprobe info --json lists them all)")
