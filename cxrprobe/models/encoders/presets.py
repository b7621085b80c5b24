"""Presets: the encoders users name, as data (``presets.json``): the model, the preprocessing
its authors used where it differs from what the model's config gives, where its weights come
from, what it was trained on (for contamination notes), and where cxrprobe's reading of it
differs from its own code."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from importlib import resources

from cxrprobe.errors import ModelError
from cxrprobe.models.encoders.base import LoadedModel

# RSNA Pneumonia's images are NIH ChestX-ray14's: weights that saw NIH saw them
OVERLAPS = {"nih-chestxray14": ("rsna-pneumonia",)}
# model names whose folder holds the weights, by back-end: an open_clip hub or local folder, a transformers one
FOLDER_KINDS = {"hf-hub:": "open_clip", "local-dir:": "open_clip", "hf:": "transformers"}


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    weights: str
    preprocessing: dict
    trained_on: tuple[str, ...]
    source: str
    differs: str
    notes: str

    def applied(self, loaded: LoadedModel) -> LoadedModel:
        """``loaded`` read as the preset says (its preprocessing), and marked as the preset."""
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in self.preprocessing.items()}
        return dataclasses.replace(loaded, preprocessing=dataclasses.replace(loaded.preprocessing, **fields),
                                   preset=self.name, trained_on=self.trained_on)

    @property
    def from_folder(self) -> bool:
        """Whether the weights come with the model's folder (a hub or local one), not a file."""
        return self.model.startswith(tuple(FOLDER_KINDS))

    def located(self, model: str | None) -> str:
        """The model to load: the preset's, or the folder ``model`` names in its place (a local
        copy of a hub model, of the same kind); any other ``--model`` is refused."""
        if model is None:
            return self.model
        kind = next((k for k in FOLDER_KINDS if self.model.startswith(k)), None)
        given = next((k for k in FOLDER_KINDS if model.startswith(k)), None)
        if kind is None or given is None or FOLDER_KINDS[kind] != FOLDER_KINDS[given]:
            raise ModelError(f"--encoder {self.name} names its model ({self.model}); --model may only point it at "
                             "a local folder of the same kind (hf:FOLDER, local-dir:FOLDER)")
        return model

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "trained_on": list(self.trained_on)}


def presets() -> tuple[Preset, ...]:
    raw = json.loads((resources.files("cxrprobe.models.encoders") / "presets.json").read_text())
    return tuple(Preset(**{**entry, "trained_on": tuple(entry["trained_on"])}) for entry in raw)


def find_preset(name: str) -> Preset:
    known = {preset.name: preset for preset in presets()}
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelError(f"unknown encoder {name!r}{hint} (cxrprobe encoders lists them: {', '.join(known)})")


def contamination(trained_on: tuple[str, ...] | list[str], dataset: str) -> str | None:
    """A note where weights trained on ``trained_on`` are evaluated on ``dataset``'s images."""
    seen = {d for name in trained_on for d in (name, *OVERLAPS.get(name, ()))}
    if dataset not in seen:
        return None
    via = "" if dataset in trained_on else " (its images are among those of a dataset the weights were trained on)"
    return (f"the encoder's weights were trained on {dataset}{via}: its test figures are not those of an unseen "
            "dataset")
