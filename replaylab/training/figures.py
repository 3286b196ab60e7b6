"""Figures a run writes while it trains (matplotlib's Agg canvas, no global backend)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from replaylab.training.checkpoint import write_atomic


def new_figure(nrows: int, ncols: int, size: tuple[float, float]):
    """A figure and its axes (flat array) on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    write_atomic(path, png.getvalue())
    return path


def task_axis(names, params: np.ndarray) -> tuple[str, np.ndarray]:
    """One number per task for an x axis: the parameter itself, or a 2-D goal's angle."""
    if params.shape[1] == 2:
        return "goal angle (rad)", np.arctan2(params[:, 1], params[:, 0])
    return names[0], params[:, 0]


def encodings_figure(path: Path, names, params: np.ndarray, mean: np.ndarray, std: np.ndarray, title: str) -> Path:
    """z (posterior mean +- std), one panel per latent dimension, against the task."""
    label, x = task_axis(names, params)
    order = np.argsort(x)
    dims = mean.shape[1]
    fig, axes = new_figure(1, dims, (2.6 * dims + 0.6, 2.8))
    for d, ax in enumerate(axes):
        ax.errorbar(x[order], mean[order, d], yerr=std[order, d], fmt="o", ms=3, lw=1, capsize=0)
        ax.set_xlabel(label)
        ax.set_title(f"z[{d}]")
        ax.grid(alpha=0.3)
    fig.suptitle(f"task encodings of the test tasks after adaptation ({title})")
    return save_figure(fig, path)
