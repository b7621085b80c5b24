"""``cxrprobe report``: tables (and optionally one plot) from one or more results dirs."""

from __future__ import annotations

import json
from pathlib import Path

from cxrprobe.errors import InputError
from cxrprobe.fsutil import check_writable_folder, replacing, reporting_no_room
from cxrprobe.report.plots import plot_curves, read_summary


def load_results(dirs: list[Path]) -> dict[str, dict]:
    """{label: curves} for each results dir; the label is the folder name when several."""
    loaded: dict[str, dict] = {}
    for folder in dirs:
        folder = Path(folder)
        summary, config = folder / "summary.csv", folder / "config.json"
        if not summary.is_file() or not config.is_file():
            raise InputError(f"{folder} is not a cxrprobe results dir (no summary.csv and config.json)")
        try:
            json.loads(config.read_text())
            curves = read_summary(summary)
        except OSError as exc:
            raise InputError(f"cannot read {exc.filename or folder}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:  # TypeError: a row shorter than the header
            raise InputError(
                f"{folder}/summary.csv or config.json is malformed ({exc}); rerun cxrprobe fewshot"
            ) from None
        if not curves:
            raise InputError(f"{folder}/summary.csv holds no results; rerun cxrprobe fewshot into a new folder")
        label = folder.resolve().name
        if label in loaded:
            label = str(folder)
        loaded[label] = curves
    return loaded


def contamination_notes(dirs: list[Path]) -> list[str]:
    """Each results dir's warning that its encoder's weights saw the evaluated dataset (after
    ``load_results`` has checked the dirs)."""
    notes = []
    for folder in dirs:
        encoder = json.loads((Path(folder) / "config.json").read_text()).get("encoder") or {}
        if isinstance(encoder, dict) and encoder.get("contamination"):
            notes.append(f"{Path(folder).name}: {encoder['contamination']}")
    return notes


def combined_curves(loaded: dict[str, dict]) -> dict[str, list]:
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    return {f"{label}: {head}": points for label, curves in loaded.items() for head, points in curves.items()}


def write_plot(loaded: dict[str, dict], out_png: Path) -> None:
    if out_png.suffix.lower() != ".png":
        raise InputError(f"--plot must name a .png file, got {out_png}")
    if out_png.is_dir():
        raise InputError(f"--plot {out_png} is a folder; give a .png file name")
    check_writable_folder(out_png.parent)
    with reporting_no_room(out_png), replacing(out_png) as tmp:
        plot_curves(combined_curves(loaded), tmp, " vs ".join(loaded))
