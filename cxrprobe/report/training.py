"""An adaptation run's history as files: metrics.csv (one row an epoch) and training_curve.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cxrprobe.fsutil import write_new_file
from cxrprobe.report.plots import new_figure


def write_training_history(out: Path, history: list[dict]) -> None:
    """What follows the checkpoint each epoch, derived from its history alone."""
    write_metrics_csv(out / "metrics.csv", history)
    plot_training_curve(out / "training_curve.png", history)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_new_file(path, text.getvalue().encode())


def plot_training_curve(path: Path, history: list[dict]) -> None:
    """Training loss and validation mean AUC (never test) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = new_figure(6, 3.5, 110)
    left = fig.subplots()
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", color="tab:blue")
    left.set_xlabel("epoch")
    left.set_ylabel("train focal loss", color="tab:blue")
    right = left.twinx()
    right.plot(epochs, [h["val_mean_auc"] for h in history], marker="s", color="tab:red")
    right.set_ylabel("validation mean AUC (not test)", color="tab:red")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", metadata={"Software": None})
    write_new_file(path, image.getvalue())
