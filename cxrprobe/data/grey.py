"""Stored pixel values to 8-bit grey, and the error of a file that cannot become an image.

A 16-bit file's container depth says nothing about its pixels' range (PadChest stores 12-bit
values in 16-bit PNGs), so no policy here divides by 65535.
"""

from __future__ import annotations

import numpy as np

INTENSITIES = ("bits", "minmax", "percentile")
PERCENTILES = (0.5, 99.5)


class ImageDecodeError(Exception):
    """A file that cannot become an image; ``str(exc)`` is the reason kept in the cache."""


def to_eight_bits(values: np.ndarray, intensity: str, bits_stored: int | None = None) -> np.ndarray:
    """A grey image's values as uint8 under an ``intensity`` policy (``images.Preprocessing``)."""
    values = np.asarray(values, dtype=np.float64)
    if intensity == "bits" and bits_stored is not None:
        return scaled_to_eight_bits(values, 0.0, float(2**bits_stored - 1))
    if intensity == "percentile":
        return scaled_to_eight_bits(values, *np.percentile(values, PERCENTILES))
    return scaled_to_eight_bits(values, float(values.min()), float(values.max()))  # minmax; bits without a depth


def scaled_to_eight_bits(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low`` .. ``high`` to 0 .. 255, clipping beyond; an empty range gives black."""
    if high <= low:
        return np.zeros(np.shape(values), dtype=np.uint8)
    scaled = (np.asarray(values, dtype=np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
