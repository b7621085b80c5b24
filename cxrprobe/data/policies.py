"""How a labeller's four values become labels and a known-mask: a visible, recorded choice.

CheXpert-style labels take 1 (positive), 0 (negative), -1 (uncertain) or blank (not
mentioned in the report). Tools differ silently here, and it moves AUCs: the CheXpert
authors count a blank as negative, torchxrayvision drops both -1 and blank from its loss,
few-shot-MedVLMs fills 0. cxrprobe makes each a named policy, recorded in the cache and
every results dir:

- ``uncertain``: ``ignore`` (U-Ignore: unknown, the default), ``zero`` (U-Zeros) or ``one``
  (U-Ones), after Irvin et al. (CheXpert, AAAI'19);
- ``blank``: ``negative`` (the default, as the CheXpert authors) or ``ignore`` (unknown).

An unknown label is 0 in ``labels`` and false in ``known``: no head fits on it and no AUC
counts it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cxrprobe.errors import DataError

UNCERTAIN = ("ignore", "zero", "one")
BLANK = ("negative", "ignore")
UNPARSED = 2.0  # no label value: marks a string to look at again
VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "": np.nan}


@dataclass(frozen=True)
class LabelPolicy:
    uncertain: str = "ignore"
    blank: str = "negative"

    def __post_init__(self) -> None:
        if self.uncertain not in UNCERTAIN:
            raise ValueError(f"uncertain must be one of {', '.join(UNCERTAIN)}, got {self.uncertain!r}")
        if self.blank not in BLANK:
            raise ValueError(f"blank must be one of {', '.join(BLANK)}, got {self.blank!r}")

    def as_dict(self) -> dict[str, str]:
        return {"uncertain": self.uncertain, "blank": self.blank}

    def apply(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8, known bool) from values in {1, 0, -1, NaN (blank)}."""
        values = np.asarray(values, dtype=np.float64)
        blank, uncertain = np.isnan(values), values == -1
        labels = (values == 1) | (uncertain & (self.uncertain == "one"))
        known = ~(uncertain & (self.uncertain == "ignore")) & ~(blank & (self.blank == "ignore"))
        return (labels & known).astype(np.uint8), known


def parse_values(columns: list[list[str]], names: tuple[str, ...] | list[str], source: str,
                 first_row: int = 2) -> np.ndarray:
    """Label columns' strings as floats [n, len(columns)] (blank -> NaN); anything outside
    {1, 0, -1, blank} is refused, naming the line and column."""
    n = len(columns[0]) if columns else 0
    values = np.stack([np.fromiter(map(VALUES.get, column, itertools.repeat(UNPARSED)), np.float64, n)
                       for column in columns], axis=1) if columns else np.zeros((0, 0))
    for row, col in zip(*np.nonzero(values == UNPARSED)):  # padded with spaces, or not a label at all
        value = VALUES.get(columns[col][row].strip())
        if value is None:
            raise DataError(f"{source}: line {row + first_row}: {names[col]} is {columns[col][row]!r}; a label "
                            "must be 1, 0, -1 or blank")
        values[row, col] = value
    return values
