"""The parts of the Python API that are not a command's own function: ``cxrprobe`` itself
re-exports these beside run_fewshot, run_zeroshot, list_heads, make_head and the head classes
(docs/python-api.md shows them in use).

Every function takes typed values and returns data: results in memory, written to disk only
when asked. Errors name the parameter at fault (``seeds must be at least 1``); they are
``cxrprobe.InputError``s, and ValueErrors too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["adapt", "embed", "open_cache", "synthetic_cache", "synthetic_dataset"]


def open_cache(path: Path | str) -> Any:
    """A complete feature cache, opened for reading (use it in a ``with`` block):
    ``.embeddings(rows)``, ``.labels``, ``.rows("train" | "val" | "test")``, ``.table`` (image
    ids, patients, splits), ``.text_prompts()`` and ``.attrs``."""
    from cxrprobe.cache.reader import FeatureCache

    return FeatureCache(path)


def embed(data_dir: Path | str, out: Path | str, **options: Any) -> Any:
    """Embed a dataset folder into the cache ``out`` (``cxrprobe embed``); ``options`` are
    EmbedOptions' fields (model, pretrained, device, batch_size, workers, resume, checkpoint, ...).
    Returns an EmbedResult (rows, failures, seconds, ...)."""
    from cxrprobe.commands.embed import EmbedOptions
    from cxrprobe.commands.embed import embed as run

    return run(EmbedOptions(data_dir=Path(data_dir), out=Path(out), **options))


def adapt(data_dir: Path | str, out: Path | str, **options: Any) -> dict:
    """Partially fine-tune the encoder with the paper's head (``cxrprobe adapt``) into the run
    folder ``out``; ``options`` are AdaptOptions' fields (unfreeze, epochs, hold_out, device, ...).
    Returns the run's summary."""
    from cxrprobe.commands.adapt import AdaptOptions
    from cxrprobe.commands.adapt import adapt as run

    if isinstance(options.get("hold_out"), (list, str)):
        hold = options["hold_out"]
        options["hold_out"] = tuple(hold.split(",") if isinstance(hold, str) else hold)
    return run(AdaptOptions(data_dir=Path(data_dir), out=Path(out), **options))


def synthetic_cache(out: Path | str, every: int = 25, dim: int = 64) -> Path:
    """A complete cache of generated embeddings over every ``every``-th row of the real NIH
    metadata bundled with cxrprobe (real labels, patients and splits), to try things on."""
    import numpy as np

    from cxrprobe.cache.synthetic import SyntheticModel, write_synthetic_cache
    from cxrprobe.data.nih import bundled_metadata_dir, load_nih_metadata

    metadata = load_nih_metadata(bundled_metadata_dir())
    write_synthetic_cache(Path(out), metadata, np.arange(0, len(metadata.table), every), SyntheticModel(dim=dim))
    return Path(out)


def synthetic_dataset(out: Path | str, images: int = 80, image_size: int = 96, seed: int = 0) -> Path:
    """A folder in the NIH layout (metadata CSV, split lists, PNGs) of ``images`` generated
    chest X-ray stand-ins with drawn labels: a dataset ``embed`` and ``adapt`` can read."""
    from cxrprobe.data.synthetic import write_nih_folder

    write_nih_folder(Path(out), images, seed=seed, image_size=image_size, test_fraction=0.2)
    return Path(out)
