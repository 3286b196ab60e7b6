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


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A figure as PNG bytes (for a file, or a page that embeds it)."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    return png.getvalue()


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, png_bytes(fig, dpi))
    return path


def task_axis(names, params: np.ndarray) -> tuple[str, np.ndarray]:
    """One number per task for an x axis: the parameter itself, or a 2-D goal's angle."""
    if params.shape[1] == 2:
        return "goal angle (rad)", np.arctan2(params[:, 1], params[:, 0])
    return names[0], params[:, 0]


def encodings_figure(path: Path, names, params: np.ndarray, mean: np.ndarray, std: np.ndarray, title: str,
                     classes: np.ndarray | None = None) -> Path:
    """z (posterior mean +- std), one panel per latent dimension, against the task; with
    ``classes`` (one int per task, e.g. CEMRL's class assignment) one more panel of them."""
    label, x = task_axis(names, params)
    order = np.argsort(x)
    dims = mean.shape[1]
    panels = dims + (classes is not None)
    fig, axes = new_figure(1, panels, (2.6 * panels + 0.6, 2.8))
    for d, ax in enumerate(axes[:dims]):
        ax.errorbar(x[order], mean[order, d], yerr=std[order, d], fmt="o", ms=3, lw=1, capsize=0)
        ax.set_xlabel(label)
        ax.set_title(f"z[{d}]")
        ax.grid(alpha=0.3)
    if classes is not None:
        ax = axes[dims]
        ax.plot(x[order], np.asarray(classes)[order], "o", ms=3)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(label)
        ax.set_title("class")
        ax.grid(alpha=0.3)
    fig.suptitle(f"task encodings of the test tasks after adaptation ({title})")
    return save_figure(fig, path)


def response_figure(path: Path, trace, tasks: np.ndarray, title: str) -> Path:
    """The time response of the traced episodes (an ``evaluate.Trace``), one column each:
    the env's response quantity and the active task's target over the episode's steps
    (dotted lines at task switches), below it the belief's z over the same steps, and the
    class where the method has one."""
    rows = 1 + (trace.z_mean is not None) + (trace.z_class is not None)
    cols = len(trace.envs)
    fig, axes = new_figure(rows, cols, (3.2 * cols + 0.4, 2.3 * rows + 0.5))
    axes = axes.reshape(rows, cols)
    for c, j in enumerate(trace.envs):
        steps = np.arange(1, len(trace.response[c]) + 1)
        switches = steps[1:][np.diff(trace.task[c]) != 0]
        ax = axes[0, c]
        ax.plot(steps, trace.response[c], lw=1.2, label=trace.label)
        ax.plot(steps, trace.target[c], lw=1.2, ls="--", drawstyle="steps-mid", label=f"target {trace.param}")
        ax.set_title(f"task {int(tasks[j])}" + (f", {len(switches)} switch{'es' * (len(switches) != 1)}"
                                                 if len(switches) else ""))
        if c == 0:
            ax.set_ylabel(trace.label)
            ax.legend(fontsize=7, loc="best")
        row = 1
        if trace.z_mean is not None:
            ax = axes[row, c]
            z = trace.z_mean[c]
            for d in range(z.shape[1]):
                ax.plot(steps, z[:, d], lw=1, label=f"z[{d}]")
            if c == 0:
                ax.set_ylabel("z (belief mean)")
                if z.shape[1] <= 8:
                    ax.legend(fontsize=7, loc="best")
            row += 1
        if trace.z_class is not None:
            ax = axes[row, c]
            ax.plot(steps, trace.z_class[c], lw=1, drawstyle="steps-mid")
            ax.yaxis.get_major_locator().set_params(integer=True)
            if c == 0:
                ax.set_ylabel("class")
        for ax in axes[:, c]:
            for t in switches:
                ax.axvline(t - 0.5, color="0.5", lw=0.8, ls=":")
            ax.grid(alpha=0.3)
        axes[-1, c].set_xlabel("step")
    fig.suptitle(f"time response, last evaluation episode ({title})")
    return save_figure(fig, path)
