"""The 14 NIH ChestX-ray14 findings in one canonical order, with display and prompt names.

The order is the one of the NIH release and of the paper (Atelectasis ... Hernia); every
label matrix, cache and results file in cxrprobe uses it. "No Finding" is not a class: in NIH
it is an all-zero row.
"""

from __future__ import annotations

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

NO_FINDING = "No Finding"

# How a finding reads in a sentence ("A chest X-ray showing pleural thickening").
PROMPT_NAMES: dict[str, str] = {
    name: name.replace("_", " ").lower() for name in FINDINGS
}

# How a finding reads in a table header.
DISPLAY_NAMES: dict[str, str] = {name: name.replace("_", " ") for name in FINDINGS}
