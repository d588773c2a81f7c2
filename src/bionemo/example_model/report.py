"""Results a person can read: predictions CSV, summary.json, loss-curve and confusion-matrix PNGs."""

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bionemo.example_model.results import Predictions

__all__: Sequence[str] = ("plot_confusion_matrix", "plot_loss_curves", "write_json", "write_predictions_csv")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename so an interrupted run never leaves a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_predictions_csv(preds: Predictions, path: Path) -> None:
    """One row per test image: idx, label, prediction."""
    rows = torch.stack([preds.idx, preds.label, preds.prediction], dim=1).tolist()
    lines = ["idx,label,prediction"] + [",".join(map(str, row)) for row in rows]
    _atomic_write_text(path, "\n".join(lines) + "\n")


def write_json(data: dict[str, Any], path: Path) -> None:  # noqa: D103
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def confusion_matrix(preds: Predictions, num_classes: int = 10) -> torch.Tensor:
    """Counts [true digit, predicted digit]."""
    flat = preds.label * num_classes + preds.prediction
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(preds: Predictions, path: Path) -> None:
    """Heat map of the confusion matrix with counts, titled with the accuracy."""
    plt = _pyplot()
    cm = confusion_matrix(preds).numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cm, cmap="Blues")
    for (i, j), count in np.ndenumerate(cm):
        ax.text(
            j, i, str(count), ha="center", va="center", fontsize=7, color="white" if count > cm.max() / 2 else "black"
        )
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit")
    ax.set_title(f"MNIST test confusion matrix (accuracy {preds.accuracy:.4f}, n={len(preds.idx)})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_metrics(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series per metric from Lightning's CSVLogger file."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not metrics_csv.is_file():
        return series
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            step = row.get("step") or row.get("global_step")
            if not step:
                continue
            for key in ("reduced_train_loss", "val_loss"):
                if row.get(key):
                    series.setdefault(key, []).append((int(float(step)), float(row[key])))
    return series


def plot_loss_curves(stage_metrics: dict[str, Path], path: Path) -> None:
    """One panel per stage: training and validation loss against step."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stage_metrics), figsize=(6 * len(stage_metrics), 4), squeeze=False)
    for ax, (stage, metrics_csv) in zip(axes[0], stage_metrics.items()):
        for key, label in (("reduced_train_loss", "train"), ("val_loss", "validation")):
            points = read_metrics(metrics_csv).get(key, [])
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if key == "val_loss" else None, label=label)
        ax.set(title=stage, xlabel="step", ylabel="loss", yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
