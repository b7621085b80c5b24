"""Decoding chest X-ray files into model-ready pixels, and the DataLoader pieces around it.

Workers decode and resize; they hand back 8-bit grey images at the model's input size, so a
batch crosses the process boundary as 50 KB an image instead of 600 KB of float RGB. The
model side expands to three channels and normalises (``to_model_input``): a grey image
replicated to RGB is exactly what ``Image.convert("RGB")`` gives.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import asdict, dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cxrprobe.data.dicom import DICOM_WINDOWS, is_dicom, read_dicom
from cxrprobe.data.grey import INTENSITIES, ImageDecodeError, to_eight_bits

# CLIP's statistics (open_clip.constants.OPENAI_DATASET_MEAN / STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}
RESIZE_MODES = ("shortest", "squash", "letterbox")
_GREY_CONVERTIBLE = {"1", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "La", "PA", "RGBa", "RGBX"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes model input; stored in every cache so a cache describes itself.

    ``resize_mode`` "shortest" scales the shorter side to ``resize_size`` (default
    ``image_size``) and centre-crops ``image_size`` (open_clip's default; DINOv2's processor
    resizes to 256 and crops 224); "squash" resizes both sides to ``image_size``; "letterbox" scales
    the longer side to it and pads the rest with black, centred (CheXzero's preprocessing).
    ``channels`` is 3 (the grey image replicated, as ``convert("RGB")`` gives) or 1
    (torchxrayvision); each channel is (x / 255 - mean) / std, so torchxrayvision's range of
    +-1024 is mean 0.5, std 1 / 2048.
    ``reducing_gap`` is Pillow's two-step resize: faster on 1024 px images than an exact
    bicubic resize (benchmarks/choices.py), and within a fraction of a grey level of it.
    ``intensity`` is how a 16-bit image becomes 8 bits (8-bit images are taken as they are):
    "bits" scales 0 .. 2**b - 1 to 0 .. 255 for the stored bit depth b the dataset's metadata
    gives, and an image without one by its own range, as "minmax" does; "minmax" scales the
    image's minimum .. maximum to 0 .. 255; "percentile" its 0.5th .. 99.5th percentiles,
    clipping beyond them (a burnt-in marker or a dead pixel does not darken the rest).
    ``dicom_window`` is how a DICOM file's values are shown (``data.dicom``): voi, minmax or bits.
    """

    image_size: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    reducing_gap: float = 2.0
    intensity: str = "bits"
    dicom_window: str = "voi"
    channels: int = 3
    resize_size: int | None = None

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}, got {self.intensity!r}")
        if self.dicom_window not in DICOM_WINDOWS:
            raise ValueError(f"dicom_window must be one of {', '.join(DICOM_WINDOWS)}, got {self.dicom_window!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}")
        if self.resize_size is not None and (self.resize_mode != "shortest" or self.resize_size < self.image_size):
            raise ValueError("resize_size goes with resize_mode 'shortest' and is at least image_size")
        if self.channels not in (1, 3) or len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"channels must be 1 or 3, with a mean and a std for each; got {self.channels}, "
                             f"{len(self.mean)} means, {len(self.std)} stds")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


DICOM_SUFFIXES = (".dcm", ".dicom")


def load_grey(path: str, prep: Preprocessing, bits_stored: int | None = None) -> np.ndarray:
    """Decode ``path`` and resize it to a uint8 [size, size] grey image; ``bits_stored`` is the
    bit depth of a 16-bit image's values where the dataset's metadata gives it.

    Raises ImageDecodeError with a one-line reason for an empty, truncated, corrupt or
    unsupported file. Pillow's decompression-bomb limit stays on.
    """
    try:
        if os.path.getsize(path) == 0:
            raise ImageDecodeError("empty file (0 bytes)")
        with open(path, "rb") as handle:  # opened once: its first bytes say DICOM or not
            if is_dicom(handle.read(132)):
                return _resize(Image.fromarray(read_dicom(path, prep.dicom_window), mode="L"), prep)
            handle.seek(0)
            with Image.open(handle) as img:
                img.load()
                grey = _to_grey(img, prep.intensity, bits_stored)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        if path.lower().endswith(DICOM_SUFFIXES):
            raise ImageDecodeError("named as DICOM but no DICOM file (no DICM marker at byte 128), nor an image "
                                   "Pillow can identify") from None
        raise ImageDecodeError("not an image file Pillow can identify") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text:
            raise ImageDecodeError(f"truncated image: {text}") from None
        raise ImageDecodeError(f"corrupt image: {text}") from None
    return _resize(grey, prep)


def _to_grey(img: Image.Image, intensity: str, bits_stored: int | None) -> Image.Image:
    if img.mode == "L":
        return img
    if img.mode in _SIXTEEN_BIT:
        return Image.fromarray(to_eight_bits(np.asarray(img), intensity, bits_stored), mode="L")
    if img.mode in _GREY_CONVERTIBLE:
        return img.convert("L")
    raise ImageDecodeError(f"unsupported pixel format {img.mode!r}")


def _resize(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    size = prep.image_size
    width, height = img.size
    if prep.resize_mode == "letterbox":
        return _letterbox(img, prep)
    short = prep.resize_size or size
    if prep.resize_mode == "squash":
        target = (size, size)
    elif width <= height:
        target = (short, max(short, int(short * height / width)))
    else:
        target = (max(short, int(short * width / height)), short)
    if img.size != target:
        img = img.resize(target, _INTERPOLATIONS[prep.interpolation], reducing_gap=prep.reducing_gap)
    left = int(round((target[0] - size) / 2.0))
    top = int(round((target[1] - size) / 2.0))
    if target != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy wants one


def _letterbox(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The longer side scaled to the input size (sides rounded down, as CheXzero's
    ``preprocess`` does), centred on a black square."""
    size = prep.image_size
    ratio = size / max(img.size)
    target = tuple(max(1, int(side * ratio)) for side in img.size)
    if img.size != target:
        img = img.resize(target, _INTERPOLATIONS[prep.interpolation], reducing_gap=prep.reducing_gap)
    square = Image.new("L", (size, size))
    square.paste(img, ((size - target[0]) // 2, (size - target[1]) // 2))
    return np.array(square, dtype=np.uint8)


def to_model_input(grey: torch.Tensor, prep: Preprocessing, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [b, s, s] grey batch -> normalised float [b, channels, s, s] in ``dtype``.

    (x / 255 - mean) / std is one multiply-add per channel, written straight into the
    output: on a CPU, faster than broadcasting over a [b, 1, s, s] view (benchmarks/choices.py).
    """
    x = grey.to(torch.float32)
    out = torch.empty((grey.shape[0], prep.channels, *grey.shape[1:]), dtype=torch.float32, device=grey.device)
    for c, (mean, std) in enumerate(zip(prep.mean, prep.std)):
        torch.mul(x, 1.0 / (255.0 * std), out=out[:, c]).add_(-mean / std)
    return out.to(dtype)


class DecodedItem(NamedTuple):
    row: int
    pixels: np.ndarray | None
    error: str


class DecodedBatch(NamedTuple):
    """One batch out of the DataLoader: the rows that decoded, their pixels, and the failures."""

    rows: np.ndarray  # int64 [k], manifest rows that decoded, in order
    pixels: torch.Tensor  # uint8 [k, s, s]
    failures: list[tuple[int, str]]  # (manifest row, reason)


@dataclass(frozen=True)
class DecodedBefore:
    """Images some earlier run already decoded and resized exactly as ``load_grey`` would: for
    each row, (which of ``files``, which row in it) or None. The files are uint8 [n, s, s] .npy
    arrays, memory-mapped on first use in each process (a memory map sent to a worker would be
    copied whole)."""

    files: tuple[str, ...]
    where: tuple[tuple[int, int] | None, ...]

    def count(self) -> int:
        return sum(w is not None for w in self.where)


class ImageFiles(torch.utils.data.Dataset):
    """Map-style dataset over file paths; item ``i`` is row ``i`` decoded (or read from what
    ``decoded_before`` holds), or its failure. ``bits_stored``: each row's bit depth where the
    metadata records one, else 0."""

    def __init__(self, paths: Sequence[str], prep: Preprocessing, decoded_before: DecodedBefore | None = None,
                 bits_stored: Sequence[int] | None = None) -> None:
        self.paths = list(paths)
        self.prep = prep
        self.decoded_before = decoded_before
        self.bits_stored = None if bits_stored is None else [int(b) or None for b in bits_stored]
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _decoded_before(self, row: int) -> np.ndarray | None:
        where = self.decoded_before.where[row] if self.decoded_before is not None else None
        if where is None:
            return None
        index, at = where
        if index not in self._maps:
            self._maps[index] = np.load(self.decoded_before.files[index], mmap_mode="r")
        return np.array(self._maps[index][at])

    def __getitem__(self, row: int) -> DecodedItem:
        try:
            pixels = self._decoded_before(row)
            if pixels is None:
                bits = self.bits_stored[row] if self.bits_stored is not None else None
                pixels = load_grey(self.paths[row], self.prep, bits)
            return DecodedItem(row, pixels, "")
        except ImageDecodeError as exc:
            return DecodedItem(row, None, str(exc))
        except OSError as exc:  # vanished or unreadable between listing and decoding
            return DecodedItem(row, None, f"cannot read file: {exc.strerror or exc}")


def collate_decoded(items: Sequence[DecodedItem]) -> DecodedBatch:
    ok = [item for item in items if item.pixels is not None]
    failures = [(item.row, item.error) for item in items if item.pixels is None]
    rows = np.array([item.row for item in ok], dtype=np.int64)
    if ok:
        pixels = torch.from_numpy(np.stack([item.pixels for item in ok]))
    else:
        pixels = torch.empty((0, 0, 0), dtype=torch.uint8)
    return DecodedBatch(rows, pixels, failures)


def batch_ranges(n_rows: int, batch_size: int) -> list[range]:
    """Fixed batches [b*B, (b+1)*B): the same rows always share a batch, run or resume."""
    return [
        range(b * batch_size, min(n_rows, (b + 1) * batch_size))
        for b in range(math.ceil(n_rows / batch_size))
    ]


def make_loader(
    paths: Sequence[str],
    prep: Preprocessing,
    batches: Sequence[Sequence[int]],
    workers: int,
    pin_memory: bool = False,
    decoded_before: DecodedBefore | None = None,
    bits_stored: Sequence[int] | None = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader yielding DecodedBatch for each given batch of rows, in order."""
    return torch.utils.data.DataLoader(
        ImageFiles(paths, prep, decoded_before, bits_stored),
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=collate_decoded,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
