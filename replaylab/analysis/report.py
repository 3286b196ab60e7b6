"""``replaylab report``: one self-contained HTML page over finished runs.

The page reads top to bottom: the runs, the settings in which they differ, their
throughput; then per env the learning curves, the IQM with 95% stratified-bootstrap CIs,
rliable's performance profile and probability of improvement, and for meta-RL runs the
per-task returns and the task encodings; with several envs, the same statistics over
every env for the methods that ran on all of them. The numbers come from
:mod:`replaylab.analysis.aggregate` (so they equal ``replaylab compare``'s table), the
curves from :mod:`replaylab.analysis.plot`, the meta figures from what the runs wrote.
Figures are PNG data URIs: the file needs no server, no network and no other file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from replaylab.analysis.aggregate import (
    ALL_ENVS, CONFIDENCE, DEFAULT_REPS, LOGGING_KEYS, METRICS, NORMALISATION, RunRecord, aggregate, env_scores,
    find_run_dirs, load_run, load_runs, normalise_per_env, runs_summary, score_matrices, seeded_bootstrap)
from replaylab.analysis.plot import curves_figure, method_colors, score_label
from replaylab.errors import ConfigError
from replaylab.training.checkpoint import write_atomic
from replaylab.training.figures import new_figure, png_bytes, task_axis
from replaylab.training.logs import read_progress

DEFAULT_NAME = "report.html"  # in DIR when one DIR is given, else in the current directory
PROFILE_TAUS = np.linspace(0.0, 1.0, 41)
# Bookkeeping that never changes what a run learns; the version and commit do, so they stay.
NOT_SETTINGS = LOGGING_KEYS - {"replaylab_version", "git_commit"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; } figure { margin: 1em 0; } img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 0.9em; } .warn { color: #a40000; }
nav a { margin-right: 1em; }
"""
# Marks on <body> how many figures decoded (data-images-decoded of data-images-total) and
# says so on the page where one did not, for a reader and for a headless-browser check.
SCRIPT = """
addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesDecoded = ok;
  document.body.dataset.imagesTotal = imgs.length;
  if (ok < imgs.length) {
    const p = document.createElement("p");
    p.className = "warn";
    p.textContent = (imgs.length - ok) + " of " + imgs.length + " figures could not be displayed";
    document.body.prepend(p);
  }
});
"""


# -- the page ---------------------------------------------------------------------------------------

class Page:
    """An HTML document written top to bottom: headings, text, tables and PNG figures."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self.sections: list[tuple[str, str]] = []  # (title, anchor) of each h2, for the contents
        self.anchors: set[str] = set()
        self.notes: list[str] = []  # warnings, shown under the title

    def heading(self, text: str, level: int = 2) -> None:
        base = anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
        while anchor in self.anchors:
            anchor = f"{base}-{len(self.anchors)}"
        self.anchors.add(anchor)
        if level == 2:
            self.sections.append((text, anchor))
        self.parts.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')

    def text(self, text: str, cls: str | None = None) -> None:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{attr}>{html.escape(text)}</p>")

    def table(self, name: str, head: Sequence[str], rows: Sequence[Sequence[Any]],
              numeric: set[int] = frozenset()) -> None:
        """A table named ``name`` (its data-table attribute); columns in ``numeric`` align right."""
        out = [f'<div class="scroll"><table data-table="{html.escape(name)}"><thead><tr>']
        out += [f"<th>{html.escape(str(h))}</th>" for h in head]
        out.append("</tr></thead><tbody>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td{' class=num' if j in numeric else ''}>{html.escape(str(cell))}</td>"
                                        for j, cell in enumerate(row)) + "</tr>")
        out.append("</tbody></table></div>")
        self.parts.append("".join(out))

    def details(self, summary: str, name: str, items: dict[str, str]) -> None:
        """A folded two-column table (key, value) under ``summary``."""
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary>")
        self.table(name, ["key", "value"], list(items.items()))
        self.parts.append("</details>")

    def figure(self, kind: str, fig_or_png: Any, caption: str) -> None:
        """A matplotlib figure (or PNG bytes) embedded as a data URI; ``kind`` is its data-figure
        attribute."""
        png = fig_or_png if isinstance(fig_or_png, bytes) else png_bytes(fig_or_png)
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<figure data-figure="{html.escape(kind)}"><img alt="{html.escape(caption)}" '
                          f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption>'
                          "</figure>")

    def html(self) -> str:
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for t, a in self.sections)
        notes = "".join(f'<p class="warn">{html.escape(n)}</p>' for n in self.notes)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>\n"
                f"<body><h1>{html.escape(self.title)}</h1><nav>{nav}</nav>{notes}\n" + "\n".join(self.parts)
                + "\n</body></html>\n")


# -- the report -----------------------------------------------------------------------------------------

def write_report(paths: Sequence[str | Path], out: str | Path | None = None, reps: int = DEFAULT_REPS,
                 score: str = "return_mean", echo: Callable[[str], None] = print) -> Path:
    """Read the runs in ``paths`` (run directories, folders of them, compare output folders) and
    write the page to ``out`` (default: ``default_out``), atomically. Returns its path."""
    out = Path(out) if out is not None else default_out(paths)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name such as {out / DEFAULT_NAME}")
    notes: list[str] = []

    def warn(msg: str) -> None:
        notes.append(msg)
        print(f"replaylab: warning: {msg}", file=sys.stderr)

    try:
        run_dirs = readable_runs(find_run_dirs(paths, option="DIR"), score, warn)
        records = load_runs(run_dirs, warn, labels=grid_labels(paths, run_dirs), score=score)
        page = build_report(records, reps, score, warn)
    except OSError as e:
        raise ConfigError(f"{e.filename or 'a run file'}: cannot be read ({e.strerror or e})") from None
    page.notes = notes
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, page.html())
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot be written ({e.strerror or e})") from None
    echo(f"wrote {out} ({len(records)} run directories)")
    return out


def readable_runs(run_dirs: Sequence[Path], score: str, warn: Callable[[str], None]) -> list[Path]:
    """The run directories ``load_run`` can read; the others (a failed sweep cell, a run not yet
    evaluated) are left out with a warning, unless none is left: then the first one's error."""
    readable, errors = [], []
    for d in run_dirs:
        try:
            load_run(d, score)
            readable.append(d)
        except ConfigError as e:
            errors.append(e)
    if not readable:
        raise errors[0]
    for e in errors:
        warn(f"left out: {e}")
    return readable


def default_out(paths: Sequence[str | Path]) -> Path:
    """DIR/report.html for one DIR, ./report.html for several."""
    return Path(paths[0]) / DEFAULT_NAME if len(paths) == 1 and Path(paths[0]).is_dir() else Path(DEFAULT_NAME)


def grid_labels(paths: Sequence[str | Path], run_dirs: Sequence[Path]) -> list[str] | None:
    """The method names a ``replaylab compare`` grid gave its runs (its OUT/summary.json), when
    every run read comes from such a grid; None otherwise (``label_methods`` names them)."""
    named: dict[tuple[Path, str], str] = {}
    for p in paths:
        try:
            runs = json.loads((Path(p) / "summary.json").read_text())["runs"]
            named.update({(Path(p).resolve(), Path(r["run_dir"]).name): str(r["method"]) for r in runs})
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no grid here, or not one we can read: label by settings
    labels = []
    for d in run_dirs:
        match = [m for (root, name), m in named.items() if name == d.name and d.resolve().is_relative_to(root)]
        if len(match) != 1:
            return None
        labels.append(match[0])
    return labels


def build_report(records: Sequence[RunRecord], reps: int = DEFAULT_REPS, score: str = "return_mean",
                 warn: Callable[[str], None] | None = None) -> Page:
    """The page over ``records`` (labelled, see ``load_runs``); ``warn`` hears what it leaves
    out (default: the page's own notes)."""
    envs = sorted({r.env for r in records})
    methods = sorted({r.method for r in records})
    colors = method_colors(methods)
    page = Page("replaylab report")
    warn = warn or page.notes.append
    page.text(f"{len(records)} run directories, {sum(len(r.curves) for r in records)} seeds, "
              f"{len(methods)} methods ({', '.join(methods)}) on {len(envs)} envs ({', '.join(envs)}). "
              f"Score: {score_label(score)} ({score} in progress.csv). Interquartile means (IQM) with "
              f"{CONFIDENCE:.0%} stratified-bootstrap confidence intervals ({reps} resamples, seeded), computed "
              "with rliable as 'replaylab compare' does: 'return' is the score at the budget (the last "
              "evaluation at or before it), 'auc' the mean score over the evaluations up to it.")
    runs_section(page, records)
    settings_section(page, records)
    throughput_section(page, records)
    for env in envs:
        env_section(page, [r for r in records if r.env == env], env, colors, reps, score, warn)
    if len(envs) > 1:
        across_envs_section(page, records, colors, reps, warn)
    return page


def runs_section(page: Page, records: Sequence[RunRecord]) -> None:
    page.heading("Runs")
    rows = [[s["run_dir"], s["method"], s["env"], s["agent"], s["replay"], len(s["seeds"]),
             f"{s['last_step']} / {s['total_steps']}"] for s in runs_summary(records)]
    page.table("runs", ["run directory", "method", "env", "agent", "replay", "seeds", "evaluated up to / total steps"],
               rows, numeric={5, 6})


def settings_section(page: Page, records: Sequence[RunRecord]) -> None:
    page.heading("Settings")
    differ, shared = config_differences(records)
    if differ:
        page.text("The keys whose values differ across the runs (— where a run does not have the key); every "
                  "other setting is shared, listed below.")
        page.table("settings", ["run directory", "method", *differ],
                   [[str(r.run_dir), r.method, *(show(r.config[k]) if k in r.config else "—" for k in differ)]
                    for r in records])
    else:
        page.text("Every run has the same settings (seeds and bookkeeping aside).")
    page.details(f"shared settings ({len(shared)} keys)", "shared-settings", {k: show(v) for k, v in shared.items()})


def config_differences(records: Sequence[RunRecord]) -> tuple[list[str], dict[str, Any]]:
    """(the keys whose values differ across runs, sorted; {key: value} of the keys every run
    shares), bookkeeping keys (``NOT_SETTINGS``: run_dir, logging) left out."""
    keys = sorted(set().union(*(r.config for r in records)) - NOT_SETTINGS)
    differ, shared = [], {}
    for k in keys:
        values = {(k in r.config, json.dumps(r.config.get(k), sort_keys=True)) for r in records}
        if len(values) > 1:
            differ.append(k)
        else:
            shared[k] = records[0].config[k]
    return differ, shared


def show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def throughput_section(page: Page, records: Sequence[RunRecord]) -> None:
    page.heading("Throughput")
    page.text("SPS: environment steps per second of one seed (all seeds of a run step together). Overall: the "
              "newest evaluation's step over the wall time up to it (compilation and evaluations included); "
              "median: the median over the intervals between evaluations; x seeds: overall SPS times the seeds, "
              "the transitions collected per second.")
    rows = []
    for r in records:
        t = throughput(r)
        rows.append([str(r.run_dir), r.method, r.env, len(r.curves), fmt(t["wall_time"], 1), fmt(t["sps"], 1),
                     fmt(t["median_sps"], 1), fmt(t["sps"] * len(r.curves) if t["sps"] is not None else None, 1)])
    page.table("throughput", ["run directory", "method", "env", "seeds", "wall time (s)", "SPS overall",
                              "SPS median", "SPS x seeds"], rows, numeric={3, 4, 5, 6, 7})


def throughput(record: RunRecord) -> dict[str, float | None]:
    """wall_time (s) and sps (its newest step over it) at the newest evaluation, and median_sps over
    the intervals between evaluations, from progress.csv (its seeds share these columns)."""
    by_step = {row["env_step"]: row for row in read_progress(record.run_dir / "progress.csv")
               if isinstance(row.get("env_step"), int)}
    last = by_step[max(by_step)]
    wall = last.get("wall_time")
    wall = float(wall) if isinstance(wall, (int, float)) and wall > 0 else None
    interval = [float(row["sps"]) for row in by_step.values() if isinstance(row.get("sps"), (int, float))]
    return {"wall_time": wall, "sps": max(by_step) / wall if wall else None,
            "median_sps": float(np.median(interval)) if interval else None}


def fmt(x: float | None, digits: int) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def env_section(page: Page, records: Sequence[RunRecord], env: str, colors: dict[str, str], reps: int, score: str,
                warn: Callable[[str], None]) -> None:
    page.heading(env)
    methods = sorted({r.method for r in records})
    page.heading("Learning curves", 3)
    page.figure("curves", curves_figure(records, methods, score=score, colors=colors),
                f"{env}: {score_label(score)} per evaluation, mean over seeds, band = min to max")
    guarded_statistics(page, records, env, colors, reps, warn)
    meta = [r for r in records if (r.run_dir / "tasks.csv").is_file()]
    if meta:
        meta_section(page, meta, env, colors, warn)


def across_envs_section(page: Page, records: Sequence[RunRecord], colors: dict[str, str], reps: int,
                        warn: Callable[[str], None] | None) -> None:
    envs = sorted({r.env for r in records})
    common = [m for m in sorted({r.method for r in records}) if all(
        any(r.method == m and r.env == env for r in records) for env in envs)]
    page.heading("All envs")
    if not common:
        page.text("No method ran on every env, so there is no comparison over envs.", cls="note")
        return
    page.text(f"Methods that ran on every env: {', '.join(common)}. {NORMALISATION}.")
    guarded_statistics(page, [r for r in records if r.method in common], ALL_ENVS, colors, reps, warn)


def guarded_statistics(page: Page, records: Sequence[RunRecord], env: str, colors: dict[str, str], reps: int,
                       warn: Callable[[str], None]) -> None:
    """``statistics``, or a note where the runs admit none (e.g. no step budget every run has
    an evaluation at), so that one such section does not cost the whole page."""
    try:
        statistics(page, records, env, colors, reps, warn)
    except ConfigError as e:
        warn(f"{'over all envs' if env == ALL_ENVS else env}: no IQM, profile or probability of improvement ({e})")
        page.text(f"No statistics here: {e}", cls="warn")


def statistics(page: Page, records: Sequence[RunRecord], env: str, colors: dict[str, str], reps: int,
               warn: Callable[[str], None] | None) -> None:
    """IQM table and bars, performance profile and probability of improvement of ``records``:
    for one env, or over all of theirs (``env`` = ALL_ENVS)."""
    methods = sorted({r.method for r in records})
    envs = sorted({r.env for r in records})
    rows = [r for r in aggregate(records, reps=reps, methods=methods, warn=warn) if r["env"] == env]
    budget = max(r["budget"] for r in rows)
    where = "over all envs, scores normalised per env" if env == ALL_ENVS else env
    page.heading("IQM", 3)
    digits = 3 if env == ALL_ENVS else 2
    page.table(f"iqm:{env}", ["method", "metric", "budget", "IQM", f"{CONFIDENCE:.0%} CI", "runs"],
               [[r["method"], r["metric"], r["budget"], f"{r['iqm']:.{digits}f}",
                 f"[{r['ci_low']:.{digits}f}, {r['ci_high']:.{digits}f}]", r["n_runs"]] for r in rows],
               numeric={2, 3, 4, 5})
    page.figure("iqm", iqm_figure(rows, methods, colors),
                f"{where}: IQM (black tick) and its {CONFIDENCE:.0%} CI (bar) per metric and step budget")

    scores = env_scores(records, budget, "return", envs, methods)
    page.heading("Performance profile", 3)
    page.figure("profile", profile_figure(score_matrices(normalise_per_env(scores), envs, None), colors, reps),
                f"{where}, return at step {budget}: the fraction of runs whose score, normalised per env to [0, 1] "
                f"by the lowest and highest run there, exceeds tau; bands: {CONFIDENCE:.0%} CIs")
    page.heading("Probability of improvement", 3)
    if len(methods) < 2:
        page.text("One method: nothing to compare it with.", cls="note")
        return
    probs = improvement(score_matrices(scores, envs, None), reps)
    page.table(f"poi:{env}", ["X", "Y", "P(X > Y)", f"{CONFIDENCE:.0%} CI"],
               [[x, y, f"{p:.3f}", f"[{lo:.3f}, {hi:.3f}]"] for (x, y), (p, lo, hi) in probs.items()],
               numeric={2, 3})
    page.figure("poi", improvement_figure(probs, colors),
                f"{where}, return at step {budget}: the probability that a run of X scores higher than a run of Y "
                f"on the same env, averaged over envs (tick), with its {CONFIDENCE:.0%} CI (bar)")


def iqm_figure(rows: Sequence[dict], methods: Sequence[str], colors: dict[str, str]):
    """Each method's IQM (tick) and CI (bar), one panel per metric and budget, as rliable draws
    interval estimates."""
    panels = sorted({(r["metric"], r["budget"]) for r in rows}, key=lambda p: (METRICS.index(p[0]), p[1]))
    fig, axes = new_figure(1, len(panels), (3.2 * len(panels) + 1.4, 0.45 * len(methods) + 1.3))
    for k, (ax, (metric, budget)) in enumerate(zip(axes, panels)):
        for i, m in enumerate(methods):
            r = next(r for r in rows if (r["method"], r["metric"], r["budget"]) == (m, metric, budget))
            ax.barh(i, r["ci_high"] - r["ci_low"], left=r["ci_low"], height=0.6, color=colors[m], alpha=0.75)
            ax.vlines(r["iqm"], i - 0.3, i + 0.3, color="k")
        ax.set_yticks(range(len(methods)), methods if k == 0 else [])
        ax.set_ylim(-0.6, len(methods) - 0.4)
        ax.set_title(f"{metric} at step {budget}", fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    return fig


def profile_figure(matrices: dict[str, np.ndarray], colors: dict[str, str], reps: int):
    """rliable's score-distribution performance profile with its bootstrap CIs."""
    from rliable import library, plot_utils

    with seeded_bootstrap():
        profiles, cis = library.create_performance_profile(matrices, PROFILE_TAUS, reps=reps,
                                                           confidence_interval_size=CONFIDENCE)
    fig, (ax,) = new_figure(1, 1, (6.0, 3.6))
    plot_utils.plot_performance_profiles(profiles, PROFILE_TAUS, cis, ax=ax, colors=colors,
                                         xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs > $\tau$",
                                         labelsize="medium", ticklabelsize="medium", legend=True,
                                         legendsize="small")
    return fig


def improvement(matrices: dict[str, np.ndarray], reps: int) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(X, Y): (P(X > Y), CI low, CI high)} for each pair of methods in order, with rliable's
    stratified independent bootstrap."""
    from rliable import library, metrics

    methods = list(matrices)
    out = {}
    for i, x in enumerate(methods):
        for y in methods[i + 1:]:
            with seeded_bootstrap():
                point, interval = library.get_interval_estimates(
                    {"pair": [matrices[x], matrices[y]]},
                    lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps=reps,
                    confidence_interval_size=CONFIDENCE)
            lo, hi = np.asarray(interval["pair"], dtype=np.float64).reshape(2)
            out[(x, y)] = (float(np.asarray(point["pair"]).reshape(())), float(lo), float(hi))
    return out


def improvement_figure(probs: dict[tuple[str, str], tuple[float, float, float]], colors: dict[str, str]):
    from rliable import plot_utils

    fig, (ax,) = new_figure(1, 1, (6.0, 0.55 * len(probs) + 1.6))
    plot_utils.plot_probability_of_improvement(
        {f"{x}|{y}": p for (x, y), (p, _, _) in probs.items()},
        {f"{x}|{y}": np.array([lo, hi]) for (x, y), (_, lo, hi) in probs.items()}, pair_separator="|", ax=ax,
        colors=[colors[x] for x, _ in probs], xticks=[0.0, 0.25, 0.5, 0.75, 1.0], left_ylabel="X",
        right_ylabel="Y", labelsize="medium", ticklabelsize="medium")
    ax.axvline(0.5, color="0.5", lw=0.8, ls=":")
    return fig


# -- meta-RL runs --------------------------------------------------------------------------------------

def meta_section(page: Page, records: Sequence[RunRecord], env: str, colors: dict[str, str],
                 warn: Callable[[str], None]) -> None:
    """Per-task returns from each run's tasks.csv, and the newest encodings and time-response
    figures the runs wrote."""
    page.heading("Per-task returns", 3)
    tables = []
    for r in records:
        try:
            tables.append((r, task_returns(r.run_dir / "tasks.csv")))
        except (csv.Error, UnicodeDecodeError, KeyError, ValueError, TypeError, StopIteration, IndexError) as e:
            warn(f"run {r.run_dir}: tasks.csv cannot be read ({type(e).__name__}: {e}); no per-task returns")
    if tables:
        page.figure("per-task", per_task_figure(tables, colors),
                    f"{env}: return per test task at the newest evaluation, first adaptation episode (open) "
                    "and last (filled): mean over seeds, bars = min to max")
    for folder, what in (("encodings", "task encodings"), ("response", "time response")):
        newest = [(r, files[-1]) for r in records if (files := sorted(
            f for f in (r.run_dir / folder).glob("step_*.png") if re.fullmatch(r"step_\d+", f.stem)))]
        if newest:
            page.heading(what.capitalize(), 3)
        for r, png in newest:
            data = png.read_bytes()
            if data[:8] != PNG_MAGIC:
                warn(f"{png}: not a PNG file; left out of the report")
                continue
            page.figure(folder, data, f"{r.method} ({r.run_dir}): {what} at step {int(png.stem[5:])}, as the run "
                                      "drew it (first seed)")


def task_returns(path: Path) -> dict[str, Any]:
    """From tasks.csv, the newest evaluation's test tasks: {"label", "x" (one number per task,
    see ``task_axis``), "first" and "last" (tasks x seeds returns of the first and last
    adaptation episode)}."""
    rows = read_progress(path)
    columns = list(rows[0])
    params = columns[columns.index("split") + 1:next(i for i, c in enumerate(columns) if c.startswith("return_"))]
    episodes = [c for c in columns if re.fullmatch(r"return_\d+", c)]
    newest = max(row["env_step"] for row in rows)
    test = [row for row in rows if row["env_step"] == newest and row["split"] == "test"]
    tasks = sorted({row["task"] for row in test})
    by_task = {t: [row for row in test if row["task"] == t] for t in tasks}
    label, x = task_axis(params, np.array([[by_task[t][0][p] for p in params] for t in tasks], dtype=np.float64))
    returns = {k: np.array([[row[c] for row in by_task[t]] for t in tasks], dtype=np.float64)
               for k, c in (("first", episodes[0]), ("last", episodes[-1]))}
    return {"label": label, "x": x, "step": newest, **returns}


def per_task_figure(tables: Sequence[tuple[RunRecord, dict[str, Any]]], colors: dict[str, str]):
    fig, axes = new_figure(1, len(tables), (4.2 * len(tables) + 0.4, 3.3))
    for ax, (r, t) in zip(axes, tables):
        order = np.argsort(t["x"])
        for k, fill in (("first", "none"), ("last", colors[r.method])):
            v = t[k][order]
            mean = v.mean(1)
            ax.errorbar(t["x"][order], mean, yerr=[mean - v.min(1), v.max(1) - mean], fmt="o", ms=4, lw=1,
                        color=colors[r.method], mfc=fill, label=f"{k} episode")
        ax.set_title(f"{r.method}, step {t['step']}", fontsize="medium")
        ax.set_xlabel(t["label"])
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    return fig


__all__ = ["Page", "write_report", "default_out", "grid_labels", "build_report", "config_differences", "throughput",
           "task_returns", "DEFAULT_NAME"]
