"""Terminal rendering of ``cxrprobe info``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cxrprobe.data.rsna import DATASET_NAME as RSNA_NAME
from cxrprobe.data.rsna import OVERLAP as RSNA_OVERLAP
from cxrprobe.data.table import SPLITS

MAX_FAILURES_SHOWN = 20


OVERLAPS = {RSNA_NAME: f"RSNA Pneumonia: {RSNA_OVERLAP}"}  # datasets that share images with another
ORIGINS = {"bundled": ", the NIH metadata bundled with cxrprobe", "data dir": ", from the data dir"}


def _origin(summary: dict) -> str:
    """Where the metadata came from; caches written before this was recorded say nothing."""
    return ORIGINS.get(summary.get("metadata_origin"), "")


def _temperature(summary: dict) -> str:
    if summary.get("logit_scale") is None:
        return "logit scale not recorded (a cache from before it was): heads read it as 100, OpenAI CLIP's"
    bias = summary.get("logit_bias") or 0.0
    return f"logit scale {summary['logit_scale']:.4g}" + (f", logit bias {bias:.4g}" if bias else "")


def _encoder(encoder: dict) -> str:
    text = (f"a text tower ({encoder.get('text_scoring')} scoring)" if encoder.get("text")
            else "no text tower (image-only: the text heads cannot run)")
    return f"{encoder.get('backend')}, {encoder.get('features')} features, {text}"


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
        f"encoder {_encoder(summary['encoder'])}\n"
        f"embeddings {summary['rows']:,} x {summary['embed_dim']} {summary['dtype']}, "
        f"{'L2-normalised' if summary['l2_normalised'] else 'raw (not normalised)'}, precision {summary['precision']}\n"
        f"preprocessing {prep.get('image_size')} px, {prep.get('resize_mode')} resize, {prep.get('interpolation')}, "
        f"{prep.get('channels', 3)} channel(s), "
        f"mean {tuple(round(v, 4) for v in prep.get('mean', []))}, std {tuple(round(v, 4) for v in prep.get('std', []))}, "
        f"16-bit intensity {prep.get('intensity', 'top 8 bits')}, "  # caches made before the policies kept the top 8
        f"DICOM window {prep.get('dicom_window', 'none (no DICOM read)')}\n"
        f"dataset {summary['dataset']} ({summary['label_source']}{_origin(summary)}), "
        f"fingerprint {str(summary['dataset_fingerprint'])[:12]}…; test split: {summary['test_source']}\n"
        f"metadata rows {summary['metadata_rows']:,}, without an image file {summary['missing_images']:,}, "
        f"failed to decode {len(summary['failures']):,}; text prompts {summary['text_prompts']}, "
        f"{_temperature(summary)}\n"
        f"created {summary['created']}"
    )
    splits = summary["splits"]
    unknown = any(n for s in SPLITS for n in splits[s]["unknown"].values())
    per_class = "positives / negatives / unknown" if unknown else "positives"
    table = Table(title=f"images per split and finding ({per_class}); normal: {summary['normal_rule']}")
    table.add_column("")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_row("images", *[f"{splits[s]['images']:,}" for s in SPLITS])
    table.add_row("patients", *[f"{splits[s]['patients']:,}" for s in SPLITS])
    table.add_row("normal", *[f"{splits[s]['normal']:,}" for s in SPLITS])
    for name, display in zip(summary["classes"], summary["display_names"]):
        table.add_row(display, *[_counts(splits[s], name, unknown) for s in SPLITS])
    console.print(table)
    if summary.get("label_policy"):
        console.print("label policy " + ", ".join(f"{k} {v}" for k, v in summary["label_policy"].items()))
    if summary["dataset"] in OVERLAPS:
        console.print(f"note: {OVERLAPS[summary['dataset']]}")
    failures = summary["failures"]
    if failures:
        console.print(f"[bold]failed to decode ({len(failures)})[/bold]")
        for item in failures[:MAX_FAILURES_SHOWN]:
            console.print(f"  {item['image_id']}: {item['reason']}")
        if len(failures) > MAX_FAILURES_SHOWN:
            console.print(f"  … and {len(failures) - MAX_FAILURES_SHOWN} more (cxrprobe info --json lists them all)")


def _counts(split: dict, name: str, with_unknown: bool) -> str:
    if not with_unknown:
        return f"{split['labels'][name]:,}"
    return f"{split['labels'][name]:,} / {split['negatives'][name]:,} / {split['unknown'][name]:,}"


def shards_text(sharded: dict) -> str:
    """A sharded embed not merged yet (``cache.ranks.shard_progress``): each shard's rows done."""
    lines = [f"{sharded['cache']}: a sharded embed into {sharded['shards']} shards, not merged yet"]
    for i, shard in enumerate(sharded["progress"]):
        lines.append(f"  shard {i}: " + ("not started" if shard is None else f"{shard['done']:,} of {shard['rows']:,} rows done"))
    return "\n".join(lines)
