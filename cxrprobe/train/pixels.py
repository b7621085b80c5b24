"""Decode once, train many epochs: a uint8 pixel cache and the augmented dataset over it.

The paper's notebook decoded every 1024x1024 PNG in every epoch (13 min an epoch on a T4,
bound by PNG decoding). Here each image is decoded and resized once, in parallel, into one
uint8 memory map [n, size, size] (50 KB an image at 224 px: 5.6 GB for all of NIH), which every
epoch then reads. Augmentation runs on those pixels, each image's draw seeded from (seed, epoch,
row), so it does not depend on worker count or on where a resumed run restarts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from cxrprobe.data.images import DecodedBefore, Preprocessing, batch_ranges, make_loader
from cxrprobe.errors import DataError, InputError
from cxrprobe.fsutil import replacing, reserve_blocks, write_new_file
from cxrprobe.launch import share
from cxrprobe.seeding import seeded_cpu

if TYPE_CHECKING:
    from torchvision.transforms import v2


def build_pixel_cache(paths: list[str], out: Path, prep: Preprocessing, workers: int, batch_size: int = 64,
                      bits_stored: list[int] | None = None) -> np.ndarray:
    """Decode every path (its bit depth from ``bits_stored``, 0 where unknown) into ``out`` (a
    .npy memory map); returns it opened read-only.

    Written under a temporary name and renamed, so a present file is always whole. A file that
    fails to decode is an error here: the training set is chosen before the cache is built.
    """
    out = Path(out)
    size = prep.image_size
    with replacing(out) as tmp:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size))
        # The memory map starts sparse: on a full disk, writing its pages would kill the process
        # with SIGBUS. Reserving the blocks first turns that into an ordinary OSError (ENOSPC).
        reserve_blocks(tmp)
        for batch in make_loader(paths, prep, batch_ranges(len(paths), batch_size), workers, bits_stored=bits_stored):
            if batch.failures:
                row, reason = batch.failures[0]
                raise DataError(f"{paths[row]} cannot be decoded ({reason}); leave it out of training")
            pixels[batch.rows] = batch.pixels.numpy()
        pixels.flush()
        del pixels
    return np.load(out, mmap_mode="r")


def pixel_record(image_ids: list[str], paths: list[str], prep: Preprocessing,
                 bits_stored: list[int] | None = None) -> str:
    """What a pixel cache holds, as JSON: which images, from which files (their size and
    modification time too, so a file replaced in place counts as new, and the bit depth the
    metadata gave), in which order, resized how. A run dir's cache is reused only when its recorded ``.source`` is this very text
    (``--force`` onto a run dir of another image set must not train on the old pixels, even
    when the counts agree), and embed reads an image from it only when its file and the
    resizing are the same (``decoded_by_adapt``)."""
    files = [_file(p, b) for p, b in zip(paths, _depths(bits_stored, len(paths)))]
    return json.dumps({"image_ids": [str(i) for i in image_ids], "files": files, "resize": _resize_settings(prep)},
                      sort_keys=True)


def _resize_settings(prep: Preprocessing) -> dict:
    return {k: v for k, v in asdict(prep).items() if k not in ("mean", "std", "channels")}  # the cache holds raw uint8 grey


def decoded_by_adapt(run_dir: Path, image_ids: list[str], paths: list[str], prep: Preprocessing,
                     bits_stored: list[int] | None = None) -> DecodedBefore:
    """Which of these images an adapt run dir's pixel caches already hold, decoded and resized
    as ``prep`` says from the very same files (of the same bit depth): those need no PNG
    decoding again."""
    files, known = [], {}
    for split in ("train", "val"):
        cache, record = Path(run_dir) / f"pixels-{split}.npy", Path(run_dir) / f"pixels-{split}.source"
        try:
            content = json.loads(record.read_text())
            shape = np.load(cache, mmap_mode="r").shape
        except (OSError, ValueError, EOFError):  # none, or another cxrprobe's digest-only record
            continue
        entries = _entries(content, prep)
        if entries is None or shape != (len(entries), prep.image_size, prep.image_size):
            continue  # another resizing, or not a record this cxrprobe wrote
        for at, (image_id, file) in enumerate(entries):
            known[image_id] = (len(files), at, file)
        files.append(str(cache))
    where = [None if (hit := known.get(str(image_id))) is None or hit[2] != _file(path, bits) else hit[:2]
             for image_id, path, bits in zip(image_ids, paths, _depths(bits_stored, len(paths)))]
    return DecodedBefore(tuple(files), tuple(where))


def _entries(content: object, prep: Preprocessing) -> list[tuple[str, tuple]] | None:
    """(image id, (path, size, mtime)) per cached row of a pixel record made with ``prep``'s
    resizing, or None."""
    if not isinstance(content, dict) or content.get("resize") != _resize_settings(prep):
        return None
    ids, files = content.get("image_ids"), content.get("files")
    if not (isinstance(ids, list) and isinstance(files, list) and len(ids) == len(files)):
        return None
    if not all(isinstance(f, list) and len(f) in (3, 4) for f in files):
        return None
    return [(str(i), tuple(f)) for i, f in zip(ids, files)]


def _file(path: str, bits_stored: int = 0) -> tuple | None:
    """(path, size, mtime), and the bit depth where known: a record without one (an image of
    a dataset that records none) reads as it always did."""
    try:
        stat = os.stat(path)
    except OSError:  # gone: decoding will say so
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns, *((int(bits_stored),) if bits_stored else ()))


def _depths(bits_stored: list[int] | None, n: int) -> list[int]:
    return [0] * n if bits_stored is None else list(bits_stored)


def paper_augmentation() -> v2.Compose:
    """Flip p=0.5, rotation +-10 deg, translation 0.1, scale 0.9-1.1, brightness and contrast 0.2,
    saturation 0.1 (a no-op on grey X-rays, kept for fidelity to the paper)."""
    from torchvision.transforms import v2  # here: torchvision takes seconds to import

    return v2.Compose([
        v2.RandomHorizontalFlip(0.5),
        v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1),
    ])


class PixelDataset(torch.utils.data.Dataset):
    """Rows of a pixel cache with their labels, augmented or not, as uint8 grey images: a batch
    crosses from a worker as 50 KB an image, and is normalised on the training device
    (``to_model_input``). An item is asked for as (epoch, row), so that workers that live
    across epochs draw each epoch's augmentation without being told of it."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, augment: bool, seed: int = 7) -> None:
        if len(pixels) != len(labels):
            raise ValueError("pixels and labels differ in length")
        self.pixels = pixels
        self.labels = labels
        self.augment = paper_augmentation() if augment else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, row = item
        grey = torch.from_numpy(np.array(self.pixels[row]))[None]  # [1, s, s] uint8
        if self.augment is not None:
            with seeded_cpu(int(np.random.SeedSequence([self.seed, epoch, int(row)]).generate_state(1)[0])):
                grey = self.augment(grey)
        return grey[0], torch.as_tensor(self.labels[row], dtype=torch.float32)


class EpochOrder(torch.utils.data.Sampler):
    """(epoch, row) for every row, in an order drawn from (seed, epoch) when ``shuffle``: the
    same on a resumed run and whatever the number of workers."""

    def __init__(self, n_rows: int, seed: int, shuffle: bool) -> None:
        self.n_rows, self.seed, self.shuffle = n_rows, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_rows

    def __iter__(self):  # noqa: ANN204
        if self.shuffle:
            seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
            rows = torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(seed)).tolist()
        else:
            rows = range(self.n_rows)
        return ((self.epoch, row) for row in rows)


class RankBatches(torch.utils.data.Sampler):
    """The one-process run's batches of ``batch_size`` items of ``order`` (the last holding what
    is left), each cut into ``ranks`` contiguous slices, of which this yields slice ``rank``. A
    last batch of fewer items than ranks joins the one before it, so that no rank is ever given
    an empty batch where there are at least as many items as ranks (adapt checks there are; a
    run of one process never has one)."""

    def __init__(self, order: EpochOrder, batch_size: int, rank: int = 0, ranks: int = 1) -> None:
        self.sampler, self.rank, self.ranks = order, rank, ranks
        self.bounds = [*range(0, len(order), batch_size), len(order)]
        if len(self.bounds) > 2 and self.bounds[-1] - self.bounds[-2] < ranks:
            del self.bounds[-2]

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def batch_sizes(self) -> list[int]:
        """The whole batches' sizes, every rank's slices together."""
        return [b - a for a, b in zip(self.bounds, self.bounds[1:])]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __iter__(self):  # noqa: ANN204
        items = list(self.sampler)
        for start, stop in zip(self.bounds, self.bounds[1:]):
            mine = share(stop - start, self.rank, self.ranks)
            yield items[start + mine.start:start + mine.stop]


def pixel_loader(dataset: PixelDataset, batch_size: int, shuffle: bool, workers: int, pin_memory: bool,
                 seed: int, rank: int = 0, ranks: int = 1) -> torch.utils.data.DataLoader:
    """One loader for the whole run: its workers (if any) live across epochs. Of several
    processes, rank ``rank`` gets its slice of each batch (``RankBatches``)."""
    batches = RankBatches(EpochOrder(len(dataset), seed, shuffle), batch_size, rank, ranks)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers,
        pin_memory=pin_memory, persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # its worker seeds, never drawn from the global RNG
    )


def open_pixel_cache(path: Path) -> np.ndarray:
    """A run dir's pixel cache, memory-mapped; np.load never unpickles (allow_pickle is off)."""
    try:
        pixels = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a pixel cache ({str(exc)[:120]}); start over with --force") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 3:
        raise InputError(f"{path} is not a pixel cache (a {pixels.dtype} array of {pixels.ndim} dimensions); "
                         "start over with --force")
    return pixels


def run_pixel_cache(out: Path, split: str, paths: list[str], image_ids: list[str], prep: Preprocessing,
                    workers: int, notify: Callable[[str], None], bits_stored: list[int] | None = None,
                    decode: bool = True) -> np.ndarray:
    """The split's pixel cache in run dir ``out``: reused when it records this very image set
    (its ``.source`` file) and has its shape, else decoded anew (``decode``; else refused, as
    by a process that opens what another decoded). A file there that is no pixel cache is
    refused."""
    cache, record = out / f"pixels-{split}.npy", out / f"pixels-{split}.source"
    source = pixel_record(image_ids, paths, prep, bits_stored)
    if cache.is_file():
        pixels = open_pixel_cache(cache)
        recorded = record.read_text() if record.is_file() else None
        if recorded == source and pixels.shape == (len(paths), prep.image_size, prep.image_size):
            return pixels
        del pixels  # its memory map, before the file is replaced
    if not decode:
        raise DataError(f"{cache} does not hold the {split} images rank 0 decoded; start over with --force")
    notify(f"decoding {len(paths):,} {split} images once into {cache.name}")
    pixels = build_pixel_cache(paths, cache, prep, workers, bits_stored=bits_stored)
    write_new_file(record, source.encode())
    return pixels
