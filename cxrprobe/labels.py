"""Label sets: a dataset's classes in one canonical order, with display and prompt names.

NIH ChestX-ray14's 14 findings keep the order of the NIH release and of the paper
(Atelectasis ... Hernia). "No Finding" is not a class: in NIH it is an all-zero row; other
datasets (CheXpert, MIMIC-CXR) have a column for it, which their label set's normal rule reads.
"""

from __future__ import annotations

from dataclasses import dataclass

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


NORMAL_IF_NONE_POSITIVE = "no finding listed"  # NIH: "No Finding" is an all-zero row
NORMAL_IF_NO_FINDING = "No Finding == 1"  # CheXpert, MIMIC-CXR: a column of its own


@dataclass(frozen=True)
class LabelSet:
    """A dataset's classes in the column order of its label matrix, how each reads in a table
    and in a sentence, and the rule that makes an image "normal" (the normals a support set
    draws). Caches record it, so everything downstream takes its classes from the cache."""

    classes: tuple[str, ...]
    display_names: tuple[str, ...]
    prompt_names: tuple[str, ...]
    normal_rule: str = NORMAL_IF_NONE_POSITIVE

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"a label set needs distinct classes, got {self.classes}")
        if not (len(self.classes) == len(self.display_names) == len(self.prompt_names)):
            raise ValueError("classes, display_names and prompt_names must have the same length")

    @classmethod
    def from_classes(cls, classes: tuple[str, ...] | list[str], normal_rule: str = NORMAL_IF_NONE_POSITIVE) -> LabelSet:
        """Display and prompt names derived from the class names ("Pleural_Thickening" reads
        "Pleural Thickening" in a table and "pleural thickening" in a prompt)."""
        classes = tuple(classes)
        display = tuple(c.replace("_", " ") for c in classes)
        return cls(classes, display, tuple(d.lower() for d in display), normal_rule)

    def __len__(self) -> int:
        return len(self.classes)

    def display(self, name: str) -> str:
        return self.display_names[self.classes.index(name)]


NIH_LABELS = LabelSet(FINDINGS, tuple(DISPLAY_NAMES[f] for f in FINDINGS), tuple(PROMPT_NAMES[f] for f in FINDINGS))
