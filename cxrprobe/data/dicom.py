"""DICOM files as 8-bit grey images, through pydicom (``pip install 'cxrprobe[dicom]'``).

A file is DICOM by its content (the ``DICM`` marker at byte 128), whatever its name. Its
stored values go through the modality LUT (rescale slope and intercept), then, under the
``dicom_window`` policy:

- ``voi`` (the default): the file's VOI LUT, else its window centre / width (the first pair
  where it lists several), as the DICOM standard displays it (PS3.3 C.11.2); a file with
  neither is scaled by its stored bit range, as ``bits``;
- ``minmax``: the image's own minimum .. maximum;
- ``bits``: the range its ``BitsStored`` can hold, after the modality LUT.

MONOCHROME1 (white is low) is inverted; any other photometric interpretation (colour) and
multi-frame files are refused, as is compressed pixel data no installed decoder reads.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from cxrprobe.data.grey import ImageDecodeError, scaled_to_eight_bits

if TYPE_CHECKING:  # pydicom is an optional extra, imported when a DICOM file is read
    from pydicom.dataset import Dataset

DICOM_WINDOWS = ("voi", "minmax", "bits")
MARKER_AT = 128
GREY = ("MONOCHROME1", "MONOCHROME2")
INSTALL = "pip install 'cxrprobe[dicom]'"


def is_dicom(head: bytes) -> bool:
    """Whether a file's first 132 bytes mark it as DICOM (a preamble, then ``DICM``)."""
    return head[MARKER_AT:MARKER_AT + 4] == b"DICM"


def read_dicom(path: str, window: str) -> np.ndarray:
    """uint8 [rows, columns] grey pixels of the DICOM file at ``path``; ImageDecodeError with
    a one-line reason for one that cannot be shown as a grey image."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut
    except ImportError:
        raise ImageDecodeError(f"a DICOM file, and pydicom is not installed ({INSTALL})") from None
    try:
        with warnings.catch_warnings():  # a damaged file's warnings: its failure is recorded instead
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise ImageDecodeError(f"corrupt DICOM file: {exc or type(exc).__name__}") from None  # its marker was read
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM file without pixel data")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GREY:
        raise ImageDecodeError(f"DICOM photometric interpretation {photometric or 'missing'!r} is not grey "
                               f"({' or '.join(GREY)})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageDecodeError(f"multi-frame DICOM ({frames} frames); one image a file is read")
    stored = _stored_pixels(ds)
    grey = _windowed(apply_modality_lut(stored, ds), ds, window)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _stored_pixels(ds: Dataset) -> np.ndarray:
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:  # no handler for the transfer syntax
        syntax = ds.file_meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", str(syntax))
        raise ImageDecodeError(f"DICOM pixel data compressed as {name}, and no installed decoder reads it "
                               f"({INSTALL} adds pylibjpeg's; {str(exc).splitlines()[0]})") from None
    except (ValueError, AttributeError, KeyError, EOFError) as exc:
        raise ImageDecodeError(f"corrupt DICOM pixel data: {exc}") from None


def _windowed(values: np.ndarray, ds: Dataset, window: str) -> np.ndarray:
    from pydicom.pixels import apply_voi_lut, apply_windowing

    if window == "minmax":
        return scaled_to_eight_bits(values, float(np.min(values)), float(np.max(values)))
    if window == "voi" and ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])  # the LUT's output: 0 .. 2**bits - 1
        return scaled_to_eight_bits(apply_voi_lut(values, ds, prefer_lut=True), 0.0, float(2**bits - 1))
    low, high = _stored_range(ds)
    if window == "voi" and "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_windowing(values, ds)  # onto the same range: low below the window, high above
    return scaled_to_eight_bits(values, low, high)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """The values ``BitsStored`` can hold, through the rescale (PS3.3 C.11.2.1.2)."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:  # as pydicom's apply_windowing, whose output this is
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high
