"""Embed throughput: decoding alone, the model alone, and the whole pipeline, side by side.

    python benchmarks/embed_throughput.py --model cxrprobe-tiny --images 600   # decode-bound
    python benchmarks/embed_throughput.py --model ViT-B-32 --images 300        # model-bound on a CPU
    python benchmarks/embed_throughput.py --encoder txv-densenet121-all          # a preset, random weights

Images are copies of the real NIH PNGs in tests/data (1024x1024, 8-bit) under generated ids, so decoding
costs what it costs on the real dataset; weights are random (``--pretrained none``), which
costs the same as real ones. Decoding and the pipeline are timed from the moment their loader
starts (its workers' start-up included, a fraction of a second) to the last batch; the model
alone after three warm-up batches of the timed shape, CUDA synchronised before each clock
read. The three stages run in turn, ``--rounds`` times, and
the medians are compared, because a shared VM's CPU speed drifts by 10-20% from minute to
minute:

- decode: the embed DataLoader over every image, all workers, no model;
- model: uint8 batches already in memory through normalisation and the visual tower;
- pipeline: ``cxrprobe embed`` itself (decode, model, crash-safe HDF5 commits), from its
  loader's start to its last batch; model loading and the final merge are reported apart.

First, decoding on one core by format: the real PNGs, and 1024 x 1024 16-bit DICOMs of their
pixels (uncompressed and RLE Lossless, written by pydicom), ``--per-format`` images each.

The target is pipeline >= 0.9 x the slower of decode and model. The last line is
``decode_ips=<n> model_ips=<n> pipeline_ips=<n> ratio=<pipeline / slower stage>``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the cxrprobe command sets it, before torch loads
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrprobe.commands.embed import EmbedOptions, embed, load_encoder
from cxrprobe.cores import usable_cores
from cxrprobe.data.images import Preprocessing, batch_ranges, make_loader
from cxrprobe.data.locate import find_images
from cxrprobe.data.nih import load_nih_metadata
from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.models.device import choose_precision, resolve_device, running_on, use_device
from cxrprobe.models.encode import encode_images

REPO = Path(__file__).resolve().parents[1]


def decode_alone(data_dir: Path, batch_size: int, workers: int, prep: Preprocessing) -> float:
    table = load_nih_metadata(data_dir).table
    paths = find_images(data_dir, table.image_ids)
    paths = paths[paths != ""].tolist()
    loader = make_loader(paths, prep, batch_ranges(len(paths), batch_size), workers)
    marks = [(time.perf_counter(), 0)]
    for batch in loader:
        marks.append((time.perf_counter(), marks[-1][1] + len(batch.rows) + len(batch.failures)))
    return steady_rate(marks)


def steady_rate(marks: list[tuple[float, int]]) -> float:
    """Images/s from the loader's start to its last batch; marks[0] is the start. (Counting from
    the first batch instead would credit every image the workers prefetched meanwhile: with 16
    workers that is 4 x 16 batches, all of a small benchmark set.)"""
    (t_start, n_start), (t_last, n_last) = marks[0], marks[-1]
    return (n_last - n_start) / (t_last - t_start)


def model_alone(loaded, n_images: int, batch_size: int, precision: str) -> float:
    size = loaded.preprocessing.image_size
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (batch_size, size, size), dtype=torch.uint8, generator=generator)
    for _ in range(3):  # warm-up at the timed shape: kernel selection, the allocator, pinned buffers
        encode_images(loaded, batch, precision)
    synchronise(loaded.device)
    start = time.perf_counter()
    done = 0
    while done < n_images:
        encode_images(loaded, batch, precision)
        done += batch_size
    synchronise(loaded.device)
    return done / (time.perf_counter() - start)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline(data_dir: Path, out: Path, args: argparse.Namespace) -> float:
    marks: list[tuple[float, int]] = []
    options = EmbedOptions(
        data_dir=data_dir, out=out, model=EmbedOptions.model if args.encoder else args.model,
        pretrained=args.pretrained, encoder=args.encoder,
        device=args.device,
        batch_size=args.batch_size, workers=args.workers, precision=args.precision, force=True,
    )
    start = time.perf_counter()
    result = embed(options, progress=lambda done, total: marks.append((time.perf_counter(), done)))
    total = time.perf_counter() - start
    print(f"    pipeline: {result.rows} images; first batch after {marks[1][0] - marks[0][0]:.2f} s; "
          f"whole command {total:.2f} s (model load and final merge included)")
    return steady_rate(marks)


def decode_by_format(png_pool: list[Path], folder: Path, per_format: int, image_size: int) -> None:
    """Images/s on one core (load_grey in this process) for the real 8-bit PNGs and for
    1024 x 1024 16-bit DICOMs, uncompressed and RLE Lossless, of the PNGs' pixels."""
    from cxrprobe.data.images import Preprocessing, load_grey
    from cxrprobe.data.synthetic_dicom import write_dicom

    folder.mkdir()
    pngs = [str(png_pool[i % len(png_pool)]) for i in range(per_format)]
    formats = {"PNG, 8-bit": pngs}
    for rle in (False, True):
        files = []
        for i, png in enumerate(pngs[: len(png_pool)]):
            with Image.open(png) as img:
                values = np.asarray(img.convert("L"), dtype=np.uint16) * 257  # the whole 16-bit range
            files.append(write_dicom(folder / f"{i}-{rle}.dcm", values, bits=16, rle=rle))
        formats[f"DICOM, 16-bit, {'RLE Lossless' if rle else 'uncompressed'}"] = [files[i % len(files)]
                                                                                  for i in range(per_format)]
    prep = Preprocessing(image_size=image_size)
    for name, paths in formats.items():
        start = time.perf_counter()
        for path in paths:
            load_grey(path, prep)
        seconds = time.perf_counter() - start
        print(f"  decode on one core, {name + ':':34s} {len(paths) / seconds:6.1f} images/s ({len(paths)} images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cxrprobe-tiny")
    parser.add_argument("--encoder", help="a preset (cxrprobe encoders) instead of --model")
    parser.add_argument("--pretrained", default="none", help="weights: random by default, which cost what real ones do")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="default: one per usable core")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="as embed's: auto is fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="an NIH-layout folder to use instead of generated copies")
    parser.add_argument("--png-pool", type=Path, default=REPO / "tests" / "data" / "nih" / "images",
                        help="real PNGs copied under generated ids [default: the six real NIH images in tests/data]")
    parser.add_argument("--per-format", type=int, default=24,
                        help="images per format in the one-core decoding comparison (PNG, DICOM); 0 skips it")
    args = parser.parse_args()
    workers = usable_cores() if args.workers is None else args.workers

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(tmp) / "data"
            pool = sorted(args.png_pool.glob("*.png"))
            if not pool:
                sys.exit(f"no real PNGs in {args.png_pool}; pass --png-pool or --data-dir")
            write_nih_folder(data_dir, args.images, seed=0, png_pool=pool)
        device = resolve_device(args.device)
        use_device(device)
        loaded = load_encoder(None if args.encoder else args.model, args.pretrained, device, args.encoder)
        precision = choose_precision(args.precision, device)
        print(f"{args.encoder or args.model} ({loaded.backend}, {loaded.preprocessing.image_size} px) {running_on(device, precision)}, {os.cpu_count()} cpus, batch {args.batch_size}, "
              f"workers {workers}, torch threads {torch.get_num_threads()}")
        if args.per_format:
            decode_by_format(sorted(args.png_pool.glob("*.png")), Path(tmp) / "formats", args.per_format,
                             loaded.preprocessing.image_size)
        n = len(load_nih_metadata(data_dir).table)
        rates: dict[str, list[float]] = {"decode": [], "model": [], "pipeline": []}
        for round_ in range(args.rounds):
            rates["decode"].append(decode_alone(data_dir, args.batch_size, workers, loaded.preprocessing))
            rates["model"].append(model_alone(loaded, n, args.batch_size, precision))
            rates["pipeline"].append(pipeline(data_dir, Path(tmp) / "cache.h5", args))
            print(f"  round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in rates.items()))
        decode_ips, model_ips, pipeline_ips = (float(np.median(rates[k])) for k in ("decode", "model", "pipeline"))
        ratio = pipeline_ips / min(decode_ips, model_ips)
        bound = "decode" if decode_ips < model_ips else "model"
        print(f"  medians over {args.rounds} rounds: decode {decode_ips:.1f}/s, model {model_ips:.1f}/s, "
              f"pipeline {pipeline_ips:.1f}/s = {ratio:.2f} x the slower stage ({bound})")
    print(f"decode_ips={decode_ips:.1f} model_ips={model_ips:.1f} pipeline_ips={pipeline_ips:.1f} ratio={ratio:.2f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
