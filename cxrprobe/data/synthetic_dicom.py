"""DICOM files written by pydicom from given stored values: for tests, the decoding benchmark
and anyone trying the DICOM path without a PACS export (needs ``cxrprobe[dicom]``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(path: Path, values: np.ndarray, bits: int = 12, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                rle: bool = False, frames: int = 1, pixels: bool = True) -> str:
    """A single-image (or ``frames``-image) DICOM of uint16 ``values`` with ``bits`` stored bits,
    optionally a window centre / width, a rescale slope / intercept and RLE Lossless
    compression; ``pixels=False`` leaves the pixel data out. Returns the path as a string."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if pixels:
        ds.PixelData = np.tile(np.asarray(values, dtype=np.uint16), (frames, 1, 1)).tobytes()
    if rle:
        ds.compress(RLELossless)
    ds.save_as(path, enforce_file_format=True)
    return str(path)
