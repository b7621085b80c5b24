"""``cxrprobe embed``: every image of a dataset through the model, once, into one cache.

Decoding runs in DataLoader workers while the model runs in the main process; batches are
committed to a crash-safe working shard (``CACHE.partial``) and the finished shard becomes
the cache in one rename. See cache/shard.py for why a resumed run writes the same bytes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from cxrprobe.cache.final import write_cache
from cxrprobe.cache.layout import created_timestamp
from cxrprobe.cache.ranks import Shard, merge_shards, shard_from, unfinished_shards
from cxrprobe.cache.reader import FeatureCache, peek_cache
from cxrprobe.cache.schema import EMBEDDING_DTYPES, EmbedSpec, attr_json, manifest_sha256, partial_path
from cxrprobe.cache.shard import ShardPlan, ShardWriter, create_shard
from cxrprobe.data.datasets import DatasetOptions, locate
from cxrprobe.data.images import DecodedBatch, DecodedBefore, make_loader
from cxrprobe.data.table import DatasetMetadata, ImageTable
from cxrprobe.errors import BusyError, CacheError, DataError, InputError
from cxrprobe.fsutil import check_output_path, exclusive_lock, remove_stale_temporaries, reporting_no_room
from cxrprobe.launch import launch_place
from cxrprobe.models.device import (
    Hardware,
    choose_precision,
    hardware,
    process_device,
    reporting_out_of_memory,
    running_on,
    use_device,
)
from cxrprobe.models.encode import Encoded, launch_encode
from cxrprobe.models.encoders.base import FEATURES
from cxrprobe.models.encoders.presets import find_preset
from cxrprobe.models.loading import LoadedModel, load_model
from cxrprobe.models.text import default_prompts
from cxrprobe.train.adapted import adaptation_record, file_sha256, load_adapted
from cxrprobe.train.pixels import decoded_by_adapt
from cxrprobe.versions import package_versions

if TYPE_CHECKING:
    import torch

Notify = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbedOptions(DatasetOptions):
    """What embed reads (``DatasetOptions``: which dataset, its policies and views), with which
    model, and how."""

    data_dir: Path
    out: Path
    model: str = "ViT-B-32"
    pretrained: str = "openai"
    encoder: str | None = None  # a preset (models.encoders.presets): names the model and its preprocessing
    features: str | None = None  # projected or pooled; None: the encoder's own
    device: str = "auto"
    batch_size: int = 64
    workers: int | None = None  # None: one per usable core (its share of them, one of several processes on a node)
    precision: str = "auto"  # fp16 autocast on CUDA, fp32 on the CPU
    dtype: str = "float16"
    limit: int | None = None
    resume: bool = False
    force: bool = False
    require_all: bool = False
    checkpoint: Path | None = None  # an adapt run dir: its encoder embeds, its head's logits are stored
    shard: str | None = None  # "I/N": this process embeds shard I of N (default: a launcher's rank, else all)


@dataclass(frozen=True)
class EmbedResult:
    out: Path
    rows: int
    failures: int
    missing: int
    metadata_rows: int
    batches_run: int
    seconds: float
    already_complete: bool = False
    unmerged: str = ""  # a shard's run that did not merge the cache: which shard, and what is left


def embed(options: EmbedOptions, notify: Notify = lambda _: None, progress: Progress | None = None) -> EmbedResult:
    started = time.perf_counter()
    _check_options(options)
    shard = shard_from(options.shard)
    # before any scan, lock or model: bad input costs nothing
    device = process_device(options.device, shard.local_rank if shard is not None else None)
    precision = choose_precision(options.precision, device)
    use_device(device)
    out = Path(options.out)
    check_output_path(out)
    oom_remedy = ("free GPU memory and rerun with --resume, or start over with a lower --batch-size and --force "
                  "(a resumed run keeps the batch size it started with)")
    partial = partial_path(out) if shard is None else shard.path(out)
    with reporting_no_room(out), reporting_out_of_memory(options.batch_size, oom_remedy), \
            exclusive_lock(partial if shard is not None else out, "writing"):
        remove_stale_temporaries(out.parent, partial.name if shard is not None else out.name)  # killed runs'; locked
        existing = _check_existing(out, partial, options)
        dataset, notes = locate(Path(options.data_dir), options)
        for note in notes:
            notify(note)
        metadata, paths = dataset.metadata, dataset.paths
        table = metadata.table
        present = np.flatnonzero(paths != "")
        missing = len(table) - len(present)
        if missing and options.require_all:
            first = table.image_ids[paths == ""][0]
            raise DataError(f"{missing:,} of {len(table):,} metadata images are not under {options.data_dir} (first: {first})")
        if len(present) == 0:
            raise DataError(f"none of the {len(table):,} images listed in {metadata.label_source} is under {options.data_dir}")
        if missing:
            notify(f"{missing:,} of {len(table):,} metadata rows have no image file under {options.data_dir}; they are left out")
        if options.limit is not None:
            present = present[: options.limit]
        manifest = table.take(present)
        checkpoint_file = None
        if options.checkpoint is not None:
            loaded, checkpoint_file, adapted = load_adapted(Path(options.checkpoint), device)
            loaded = _head_if_classes_match(loaded, adapted, table.classes, notify)
        else:
            loaded = load_encoder(_given_model(options), options.pretrained, device, options.encoder, options.features)
        loaded = loaded.reading_with(options.intensity, options.dicom_window)
        spec = EmbedSpec(
            model=loaded.name,
            pretrained=loaded.pretrained,
            weights_sha256=loaded.weights_sha256,
            preprocessing=attr_json(loaded.preprocessing.as_dict()),
            embed_dim=loaded.embed_dim,
            dtype=options.dtype,
            precision=precision,
            device=device.type,
            l2_normalised=False,
            dataset=metadata.dataset,
            dataset_fingerprint=table.fingerprint(),
            label_source=metadata.label_source,
            val_fraction=metadata.val_fraction,
            val_seed=metadata.val_seed,
            manifest_sha256=manifest_sha256(manifest.image_ids),
            encoder=attr_json(loaded.record()),
        )
        if existing == "complete":
            difference = spec.first_difference(EmbedSpec.from_attrs(peek_cache(out), out))
            if difference:
                raise CacheError(f"{out} was written by another run ({difference}); use --force to rebuild it or choose another --out")
            notify(f"{out} is already complete; nothing to do")
            with FeatureCache(out) as done:
                rows, failures = len(done.table), len(done.failures())
            return EmbedResult(out, rows, failures, missing, len(table), 0, time.perf_counter() - started, True)
        writer = _open_or_create_shard(partial, spec, options, manifest, loaded, metadata, missing, notify,
                                       checkpoint_file, hardware(device), shard)
        mine = present[writer.plan.row_start:writer.plan.row_stop]  # this shard's rows: all of them unsharded
        workers = launch_place().cores() if options.workers is None else options.workers
        bits = metadata.bit_depths(mine)
        decoded = None
        if options.checkpoint is not None:  # the run decoded its train and val images once already
            decoded = decoded_by_adapt(Path(options.checkpoint), table.image_ids[mine].tolist(), paths[mine].tolist(),
                                       loaded.preprocessing, bits)
            notify(f"{decoded.count():,} of {len(mine):,} images come decoded from the adapt run's pixel caches")
        of = "" if shard is None else f" (shard {shard.index} of {shard.count}: rows {writer.plan.row_start:,}-{writer.plan.row_stop:,})"
        notify(f"embedding {len(mine):,} images{of} {running_on(device, precision)}")
        with writer:
            batches_run = fill_shard(writer, paths[mine].tolist(), loaded, precision, workers, progress, decoded, bits)
        if shard is not None:
            return _merged_when_all_finished(out, shard, len(mine), missing, len(table), batches_run, started, notify)
        summary = write_cache(out, [partial])
        partial.unlink()
    return EmbedResult(out, summary.rows, summary.failures, missing, len(table), batches_run, time.perf_counter() - started)


def _merged_when_all_finished(out: Path, shard: Shard, rows: int, missing: int, metadata_rows: int, batches_run: int,
                              started: float, notify: Notify) -> EmbedResult:
    """The cache merged, where this was the last shard to finish; else this shard's own rows,
    and what it left: the shards still running, or another process merging them."""
    waiting = unfinished_shards(out, shard.count)
    if not waiting:
        try:
            summary = merge_shards(out)
        except BusyError:
            left = "another process is merging them"
        else:
            return EmbedResult(out, summary.rows, summary.failures, missing, metadata_rows, batches_run,
                               time.perf_counter() - started)
    else:
        left = f"{len(waiting)} shard(s) still to finish; the last merges them (or: cxrprobe merge {out})"
    notify(f"shard {shard.index} of {shard.count} is finished: {left}")
    return EmbedResult(out, rows, 0, missing, metadata_rows, batches_run, time.perf_counter() - started,
                       unmerged=f"shard {shard.index} of {shard.count}: {left}")


def load_encoder(model: str | None, pretrained: str, device: torch.device, encoder: str | None = None,
                 features: str | None = None) -> LoadedModel:
    """The model ``model`` names, or the one ``encoder``'s preset names (from the folder
    ``model`` names instead, where one is given), read as the preset says."""
    if encoder is None:
        return load_model(model or EmbedOptions.model, pretrained, device, features=features)
    preset = find_preset(encoder)
    return preset.applied(load_model(preset.located(model), pretrained, device, features=features))


def _given_model(options: EmbedOptions) -> str | None:
    """``--model`` where given (not its default)."""
    return None if options.model == EmbedOptions.model else options.model


def _check_options(options: EmbedOptions) -> None:
    if options.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.workers is not None and options.workers < 0:
        raise InputError(f"--workers must be 0 or more, got {options.workers}")
    if options.limit is not None and options.limit < 1:
        raise InputError(f"--limit must be at least 1, got {options.limit}")
    if options.features is not None and options.features not in FEATURES:
        raise InputError(f"--features must be one of {', '.join(FEATURES)}, got {options.features!r}")
    if options.encoder is not None:
        preset = find_preset(options.encoder)  # an unknown name costs nothing
        if options.checkpoint is not None:
            raise InputError("--encoder and --checkpoint exclude each other: the adapt run names its model")
        preset.located(_given_model(options))
        if options.pretrained == EmbedOptions.pretrained and not preset.from_folder:
            # the default tag would load other weights under the preset's name
            raise InputError(f"--encoder {preset.name} takes its weights from --pretrained FILE (or none): "
                             f"{preset.weights}")
    if options.dtype not in EMBEDDING_DTYPES:
        raise InputError(f"unknown embedding dtype {options.dtype!r}; use {' or '.join(EMBEDDING_DTYPES)}")


def _check_existing(out: Path, partial: Path, options: EmbedOptions) -> str:
    """'complete', 'partial' or 'none', refusing anything that needs --resume or --force."""
    if options.force:
        return "none"
    if out.exists():
        attrs = peek_cache(out, missing_ok=False, foreign_ok=True)
        if attrs is None:
            raise InputError(f"{out} exists and is not a cxrprobe cache; use --force to overwrite it or choose another --out")
        if not options.resume:
            raise InputError(f"{out} is already a complete cache; use --resume to check it or --force to rebuild it")
        return "complete"
    if partial.exists():
        if not options.resume:
            raise InputError(f"an interrupted embed left {partial.name}; use --resume to finish it or --force to start over")
        return "partial"
    return "none"


def _head_if_classes_match(loaded: LoadedModel, adapted: tuple[str, ...], classes: tuple[str, ...],
                           notify: Notify) -> LoadedModel:
    """The adapted model, without its head where the head scores other ``adapted`` classes than
    this dataset's (an encoder adapted on NIH, embedding CheXpert): its encoder still embeds."""
    if adapted == classes:
        return loaded
    notify(f"the adapted head scores {len(adapted)} other classes than this dataset's {len(classes)}; "
           "its logits are not stored (the adapted encoder embeds, the 'adapted' head cannot run on this cache)")
    return dataclasses.replace(loaded, head=None)


def _open_or_create_shard(
    partial: Path, spec: EmbedSpec, options: EmbedOptions, manifest: ImageTable, loaded: LoadedModel,
    metadata: DatasetMetadata, missing: int, notify: Notify, checkpoint_file: Path | None, machine: Hardware,
    shard: Shard | None = None,
) -> ShardWriter:
    """The run's working shard (``shard``'s rows of the manifest, or all of them), continued
    where ``--resume`` finds it, else created."""
    if partial.exists() and options.resume:
        writer = ShardWriter(partial)
        difference = spec.first_difference(writer.spec)
        rows = shard.rows(len(manifest), writer.plan.batch_size) if shard is not None else range(len(manifest))
        if not difference and (writer.plan.row_start, writer.plan.row_stop) != (rows.start, rows.stop):
            difference = f"rows {writer.plan.row_start}-{writer.plan.row_stop}, not {rows.start}-{rows.stop}"
        if difference:
            writer.close()
            raise CacheError(f"{partial.name} was started by another run ({difference}); use --force to start over")
        if writer.plan.batch_size != options.batch_size:
            notify(f"resuming with the batch size the run started with ({writer.plan.batch_size})")
        return writer
    partial.unlink(missing_ok=True)
    prompts = default_prompts(manifest.label_set) if loaded.has_text else None  # image-only: no text group
    text_embeddings = loaded.encode_texts(prompts.prompts) if prompts is not None else None
    extra = {
        "created": created_timestamp(),
        "n_metadata_rows": len(metadata.table),
        "n_missing_images": missing,
        "metadata_origin": metadata.origin,
        "test_source": metadata.test_source,
        **({"label_policy": attr_json(metadata.label_policy)} if metadata.label_policy else {}),
        "limit": options.limit if options.limit is not None else -1,
        "versions": attr_json(package_versions()),
        "hardware": attr_json(machine.as_dict()),
        **({"logit_scale": loaded.logit_scale, "logit_bias": loaded.logit_bias} if loaded.has_text else {}),
    }
    if checkpoint_file is not None:
        extra.update(checkpoint=str(checkpoint_file.parent), checkpoint_sha256=file_sha256(checkpoint_file),
                     adaptation=attr_json(adaptation_record(checkpoint_file.parent)))
    rows = shard.rows(len(manifest), options.batch_size) if shard is not None else range(len(manifest))
    plan = ShardPlan(rows.start, rows.stop, len(manifest), options.batch_size)
    head_state = (
        {k: v.detach().cpu().numpy() for k, v in loaded.head.state_dict().items()} if loaded.head is not None else None
    )
    create_shard(partial, spec, plan, manifest.take(np.arange(rows.start, rows.stop)), prompts, text_embeddings, extra,
                 with_head=loaded.head is not None, head_state=head_state)
    return ShardWriter(partial)


def fill_shard(
    writer: ShardWriter, paths: list[str], loaded: LoadedModel, precision: str, workers: int,
    progress: Progress | None = None, decoded: DecodedBefore | None = None, bits_stored: list[int] | None = None,
) -> int:
    """Embed the shard's pending batches; ``paths`` are the shard's own rows (``decoded``, rows
    already decoded elsewhere; ``bits_stored``, their bit depths, 0 where unknown). Returns
    batches run."""
    if len(paths) != writer.n_rows:
        raise ValueError(f"{len(paths)} paths for a shard of {writer.n_rows} rows")
    batches = writer.pending_batches()
    loader = make_loader(paths, loaded.preprocessing, batches, workers, loaded.device.type == "cuda", decoded,
                         bits_stored)
    done = writer.n_rows - sum(len(b) for b in batches)
    if progress:
        progress(done, writer.n_rows)
    # One batch in flight: batch i+1 is launched on the device before batch i is read back and
    # committed, so the GPU computes while the host copies and writes (on the CPU it changes nothing).
    in_flight = None
    for batch, decoded in zip(batches, loader):
        launched = (batch, decoded, launch_encode(loaded, decoded.pixels, precision) if len(decoded.rows) else None)
        if in_flight is not None:
            done = _commit(writer, *in_flight, loaded.embed_dim, done, progress)
        in_flight = launched
    if in_flight is not None:
        _commit(writer, *in_flight, loaded.embed_dim, done, progress)
    return len(batches)


def _commit(writer: ShardWriter, batch: range, decoded: DecodedBatch, encoded: Encoded | None, embed_dim: int,
            done: int, progress: Progress | None) -> int:
    embeddings, logits = encoded.result() if encoded is not None else (np.zeros((0, embed_dim), np.float32), None)
    writer.commit(batch, decoded.rows, embeddings, decoded.failures, logits)
    if progress:
        progress(done + len(batch), writer.n_rows)
    return done + len(batch)
