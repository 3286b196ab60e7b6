"""Learning curves of several methods: one panel per env, one line per method.

The line is the mean evaluation return over a method's runs (seeds) and the band spans
their minimum to maximum. Drawn with matplotlib's Agg canvas directly, so no global
backend is changed, and written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from replaylab.analysis.aggregate import RunRecord
from replaylab.training.figures import new_figure, save_figure


def method_curve(records: Sequence[RunRecord], method: str, env: str) -> tuple[np.ndarray, ...]:
    """(steps, mean, min, max) over every seed of ``method`` on ``env``.

    Steps where only some seeds were evaluated (runs with different eval_interval or an
    unfinished run) use the seeds evaluated there.
    """
    by_step: dict[int, list[float]] = {}
    for r in records:
        if r.method == method and r.env == env:
            for curve in r.curves.values():
                for step, ret in curve:
                    by_step.setdefault(step, []).append(ret)
    steps = np.array(sorted(by_step), dtype=np.int64)
    vals = [np.asarray(by_step[s]) for s in steps]
    return (steps, np.array([v.mean() for v in vals]), np.array([v.min() for v in vals]),
            np.array([v.max() for v in vals]))


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """One matplotlib colour per method, by its position in ``methods``."""
    return {m: f"C{i % 10}" for i, m in enumerate(methods)}


def score_label(score: str) -> str:
    return "evaluation return" if score == "return_mean" else score.replace("_", " ")


def plot_curves(records: Sequence[RunRecord], path: str | Path, methods: Sequence[str] | None = None,
                title: str | None = None, score: str = "return_mean") -> Path:
    """Write ``curves_figure`` to ``path`` as PNG, atomically."""
    return save_figure(curves_figure(records, methods, title, score), path)


def curves_figure(records: Sequence[RunRecord], methods: Sequence[str] | None = None, title: str | None = None,
                  score: str = "return_mean", colors: dict[str, str] | None = None):
    """The learning-curve figure of ``plot_curves``; ``colors``: method -> colour (default: by
    position in ``methods``)."""
    label = score_label(score)
    envs = sorted({r.env for r in records})
    present = list(dict.fromkeys(r.method for r in records))
    methods = [m for m in (methods or sorted(present)) if m in present]
    ncols = min(len(envs), 3)
    nrows = math.ceil(len(envs) / ncols)
    fig, axes = new_figure(nrows, ncols, (4.8 * ncols, 3.6 * nrows + 0.6))
    colors = colors or method_colors(methods)
    for ax, env in zip(axes, envs):
        for method in methods:
            color = colors[method]
            steps, mean, lo, hi = method_curve(records, method, env)
            if not len(steps):
                continue
            n = sum(len(r.curves) for r in records if r.method == method and r.env == env)
            ax.plot(steps, mean, color=color, lw=1.8, marker="o" if len(steps) == 1 else None,
                    label=f"{method} ({n} seed{'s' if n != 1 else ''})")
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    for ax in axes[len(envs):]:
        ax.set_visible(False)
    fig.suptitle(title or f"{label}: mean over seeds, band = min to max")
    return fig


__all__ = ["method_curve", "method_colors", "score_label", "plot_curves", "curves_figure"]
