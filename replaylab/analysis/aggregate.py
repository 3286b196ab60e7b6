"""Load finished run directories and aggregate their evaluation returns per method.

A run directory trains S seeds at once; each seed is one *run* in the sense of rliable.
Two metrics are computed at each step budget B:

- ``return``: the evaluation return at B (the last evaluation at or before B);
- ``auc``: the area under the learning curve up to B, normalised to a mean return: the
  mean of the evaluation returns at steps <= B.

Each is reported as the interquartile mean (IQM, the mean of the middle 50% of the scores)
with a 95% stratified-bootstrap confidence interval, computed with ``rliable``, in rows of
two kinds (the ``env`` column):

- ``env = <env id>``: the IQM of the raw scores of that env's runs, in that env's units
  (the bootstrap resamples the runs);
- ``env = "all"``, only when the runs cover more than one env: the IQM over runs x envs of
  *normalised* scores, so that every env weighs the same whatever the scale of its returns.
  Per env, metric and budget, each score s becomes (s - lo) / (hi - lo), where lo and hi
  are the lowest and highest score of any run of any method on that env: 0 is the worst run
  observed there, 1 the best (an env where every run scores the same gives 0.5 to all).
  The bootstrap resamples runs within each env. The scale is relative to the runs being
  compared: adding or removing a method can move every method's ``all`` row.

The bootstrap is seeded, so the same runs always give the same table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from replaylab.errors import ConfigError
from replaylab.training.logs import read_progress

METRICS = ("return", "auc")
COLUMNS = ("env", "method", "metric", "budget", "iqm", "ci_low", "ci_high", "n_runs")
ALL_ENVS = "all"  # the env column of the rows over all envs (normalised scores)
NORMALISATION = ("all: scores normalised per env to [0, 1] by the lowest and highest score of any run "
                 "(any method) on that env at that metric and budget, so envs weigh equally")
DEFAULT_REPS = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0

# Keys that only change logging and bookkeeping, not what a run learns.
LOGGING_KEYS = {"run_dir", "progress_bar", "checkpoint_interval", "tensorboard", "wandb", "wandb_mode",
                "wandb_project", "replaylab_version", "git_commit"}
# Runs differing only in these pool silently (seeds and length are what pooling is for).
_NOT_SETTINGS = LOGGING_KEYS | {"env", "seed", "seeds", "total_steps"}


@dataclass
class RunRecord:
    """One run directory: its settings and one learning curve per seed."""

    run_dir: Path
    config: dict[str, Any]
    curves: dict[int, list[tuple[int, float]]]  # seed -> [(env_step, return_mean)], by step
    method: str = ""  # the label it is reported under, see label_methods

    @property
    def env(self) -> str:
        return str(self.config["env"])

    @property
    def replay(self) -> str:
        return str(self.config["replay"])

    @property
    def agent(self) -> str:
        return str(self.config["agent"])

    @property
    def total_steps(self) -> int:
        return int(self.config["total_steps"])

    @property
    def last_step(self) -> int:
        """The newest evaluation step every seed of this run has reached."""
        return min(c[-1][0] for c in self.curves.values())

    @property
    def finished(self) -> bool:
        return self.last_step >= self.total_steps


# -- reading ------------------------------------------------------------------------------

def find_run_dirs(paths: Iterable[str | Path], option: str = "--runs") -> list[Path]:
    """Each path is a run directory (holds config.json) or a folder with run directories in it;
    ``option`` names the paths in errors."""
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ConfigError(f"{option} {p}: no such directory")
        if not path.is_dir():
            raise ConfigError(f"{option} {p}: not a directory")
        if (path / "config.json").is_file():
            found.append(path)
            continue
        inside = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            if "config.json" in files:
                inside.append(Path(root))
                dirs.clear()  # a run directory holds no further runs
        if not inside:
            raise ConfigError(f"{option} {p}: no replaylab run directory (a folder with config.json) in it")
        found.extend(inside)
    unique: dict[Path, Path] = {}
    for d in found:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def load_run(run_dir: str | Path, score: str = "return_mean") -> RunRecord:
    """Read config.json and progress.csv of one run directory; its curves are of the
    progress.csv column ``score``."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"run {run_dir}: no config.json here; is it a replaylab run directory?")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"run {run_dir}: config.json cannot be parsed ({e})") from None
    except OSError as e:
        raise ConfigError(f"run {run_dir}: config.json cannot be read ({e.strerror or e})") from None
    if not isinstance(config, dict) or not all(k in config for k in ("env", "agent", "replay", "total_steps")):
        raise ConfigError(f"run {run_dir}: config.json lacks env, agent, replay or total_steps")
    progress = run_dir / "progress.csv"
    if not progress.is_file():
        raise ConfigError(f"run {run_dir}: no progress.csv; the run has not been evaluated yet")
    try:
        rows = read_progress(progress)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"run {run_dir}: progress.csv cannot be read ({e})") from None
    curves: dict[int, list[tuple[int, float]]] = {}
    for i, r in enumerate(rows):
        step, seed, ret = r.get("env_step"), r.get("seed"), r.get(score)
        if not isinstance(step, int) or not isinstance(seed, int) or not isinstance(ret, (int, float)):
            raise ConfigError(f"run {run_dir}: progress.csv row {i + 2} lacks a numeric env_step, seed or "
                              f"{score}")
        curves.setdefault(seed, []).append((step, float(ret)))
    if not curves:
        raise ConfigError(f"run {run_dir}: progress.csv has no evaluations yet")
    for c in curves.values():
        c.sort()
    return RunRecord(run_dir=run_dir, config=config, curves=dict(sorted(curves.items())))


def setting_label(key: str, value: Any) -> str:
    """'replay_ratio=8', 'agent.critic_lr=0.0003': a setting as a method label shows it."""
    if isinstance(value, float):
        return f"{key}={value:g}"
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def label_methods(records: Sequence[RunRecord]) -> None:
    """Label each run by its replay method, with the agent and the inference method put
    in front where the runs use several (e.g. 'pearl-uniform' against 'none-uniform'), then
    the settings in which runs with that label still differ, as a sweep labels its cells
    ('uniform replay_ratio=8'), so different settings never pool. Settings are compared within
    each env, and a setting that differs on any env labels that method's runs on every env:
    a method keeps one set of labels across envs, and settings that differ only by env
    (per-env defaults) stay out of them."""
    several = [k for k in ("agent", "inference") if len({str(r.config.get(k, "none")) for r in records}) > 1]
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        base = "-".join([str(r.config.get(k, "none")) for k in several] + [r.replay])
        groups.setdefault((base, r.env), []).append(r)
    keys: dict[str, set[str]] = {}
    for (base, _), group in groups.items():
        keys.setdefault(base, set()).update(differing_keys(group))
    for (base, _), group in groups.items():
        for r in group:
            r.method = " ".join([base, *(setting_label(k, r.config.get(k)) for k in sorted(keys[base]))])


def differing_keys(records: Sequence[RunRecord]) -> list[str]:
    """The settings (seeds and bookkeeping aside) whose values differ among ``records``, sorted."""
    return [k for k in sorted(set().union(*(r.config for r in records)) - _NOT_SETTINGS)
            if len({json.dumps(r.config.get(k), sort_keys=True) for r in records}) > 1]


def load_runs(run_dirs: Iterable[str | Path], warn: Callable[[str], None] | None = None,
              labels: Sequence[str | None] | None = None, score: str = "return_mean") -> list[RunRecord]:
    """Load and label run directories (``labels``, or where None by ``label_methods``); warn about
    unfinished runs and about pooling runs whose settings differ beyond their seeds."""
    warn = warn or _stderr
    records = [load_run(d, score) for d in run_dirs]
    if not records:
        raise ConfigError("no run directories to compare")
    label_methods(records)
    for r, label in zip(records, labels or []):
        r.method = label if label is not None else r.method
    for r in records:
        if not r.finished:
            warn(f"run {r.run_dir} is not finished (step {r.last_step} of {r.total_steps}); "
                 "using its evaluations so far")
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.method, r.env), []).append(r)
    for (method, env), group in groups.items():
        for key in differing_keys(group):
            values = {json.dumps(g.config.get(key), sort_keys=True) for g in group}
            warn(f"method {method} on {env} pools runs with different {key} ({', '.join(sorted(values))})")
    return records


def _stderr(msg: str) -> None:
    print(f"replaylab: warning: {msg}", file=sys.stderr)


# -- budgets and scores -----------------------------------------------------------------------

def default_budgets(records: Sequence[RunRecord]) -> list[int]:
    """The last evaluation step all runs reached, and its half: the newest evaluation step all
    runs share at or before half of it (half itself if they share none, as long as every run
    was evaluated by then)."""
    last = min(r.last_step for r in records)
    half = last // 2
    common = set.intersection(*({step for step, _ in c} for r in records for c in r.curves.values()))
    shared = [s for s in common if s <= half]
    if shared:
        half = max(shared)
    first = max(c[0][0] for r in records for c in r.curves.values())
    return [half, last] if first <= half < last else [last]


def check_budgets(records: Sequence[RunRecord], budgets: Sequence[int]) -> None:
    for b in budgets:
        for r in records:
            first = max(c[0][0] for c in r.curves.values())
            if b < first:
                raise ConfigError(f"--steps {b}: run {r.run_dir} has no evaluation at or before step {b} "
                                  f"(its first is at step {first})")
            if b > r.last_step:
                raise ConfigError(f"--steps {b}: run {r.run_dir} only reached step {r.last_step}")


def curve_score(curve: Sequence[tuple[int, float]], budget: int, metric: str) -> float:
    """``return``: the last evaluation at or before ``budget``; ``auc``: the mean of all of them."""
    upto = [ret for step, ret in curve if step <= budget]
    if not upto:
        raise ConfigError(f"--steps {budget}: a run has no evaluation at or before step {budget}")
    if metric == "return":
        return upto[-1]
    if metric == "auc":
        return float(np.mean(upto))
    raise ValueError(f"unknown metric {metric!r}")


def env_scores(records: Sequence[RunRecord], budget: int, metric: str, envs: Sequence[str],
               methods: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """{method: {env: scores of every run of that method on that env}}; runs are sorted by
    (seed, run directory) so the result does not depend on the order the directories were given in."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for m in methods:
        out[m] = {}
        for env in envs:
            cells = sorted(((seed, str(r.run_dir), curve) for r in records if r.method == m and r.env == env
                            for seed, curve in r.curves.items()), key=lambda x: x[:2])
            if not cells:
                raise ConfigError(f"method {m} has no runs on {env}; every method needs runs on every env")
            out[m][env] = np.array([curve_score(curve, budget, metric) for _, _, curve in cells], dtype=np.float64)
    return out


def score_matrices(scores: dict[str, dict[str, np.ndarray]], envs: Sequence[str],
                   warn: Callable[[str], None] | None, note: str = "") -> dict[str, np.ndarray]:
    """{method: (runs, envs) matrix}, keeping the first n runs of each env, n the fewest any env has."""
    out = {}
    for m, per_env in scores.items():
        columns = [per_env[env] for env in envs]
        n = min(len(c) for c in columns)
        if any(len(c) != n for c in columns) and warn is not None:
            counts = ", ".join(f"{env}: {len(c)}" for env, c in zip(envs, columns))
            warn(f"method {m} has unequal runs per env ({counts}); {note}using the first {n} of each")
        out[m] = np.stack([c[:n] for c in columns], axis=1)
    return out


def normalise_per_env(scores: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Map each env's scores to [0, 1] by the lowest and highest score of any run of any method on
    that env; an env where every run scores the same maps to 0.5."""
    envs = list(dict.fromkeys(env for per_env in scores.values() for env in per_env))
    out: dict[str, dict[str, np.ndarray]] = {m: {} for m in scores}
    for env in envs:
        pooled = np.concatenate([per_env[env] for per_env in scores.values() if env in per_env])
        lo, hi = float(pooled.min()), float(pooled.max())
        for m, per_env in scores.items():
            if env in per_env:
                x = per_env[env]
                out[m][env] = np.full_like(x, 0.5) if hi == lo else np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return out


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all runs and tasks (rliable's aggregate_iqm)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64)))


@contextlib.contextmanager
def seeded_bootstrap(seed: int = BOOTSTRAP_SEED):
    """rliable draws its bootstrap indices from NumPy's global generator: seed it for the block
    and restore it afterwards, so intervals are reproducible and the caller's stream untouched."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def iqm_interval(scores: np.ndarray, reps: int = DEFAULT_REPS, confidence: float = CONFIDENCE,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) with a stratified bootstrap over runs within each task (seeded,
    see ``seeded_bootstrap``)."""
    from rliable import library, metrics

    scores = np.asarray(scores, dtype=np.float64)
    with seeded_bootstrap(seed):
        point, interval = library.get_interval_estimates(
            {"m": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps,
            confidence_interval_size=confidence)
    lo, hi = np.asarray(interval["m"], dtype=np.float64).reshape(2)
    return float(np.asarray(point["m"]).reshape(())), float(lo), float(hi)


def aggregate(records: Sequence[RunRecord], budgets: Sequence[int] | None = None, reps: int = DEFAULT_REPS,
              methods: Sequence[str] | None = None, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The summary table, columns ``COLUMNS``: per env (sorted), one row per (method, metric,
    budget) of that env's raw scores; then, with more than one env, the same rows with env
    ``ALL_ENVS`` over runs x envs of scores normalised per env (see the module docstring)."""
    if not records:
        raise ConfigError("no run directories to compare")
    envs = sorted({r.env for r in records})
    if ALL_ENVS in envs:
        raise ConfigError(f"an env named '{ALL_ENVS}' clashes with the report's rows over all envs")
    present = list(dict.fromkeys(r.method for r in records))
    methods = [m for m in methods if m in present] + [m for m in present if m not in methods] if methods \
        else sorted(present)
    for m in methods:
        missing = [env for env in envs if not any(r.method == m and r.env == env for r in records)]
        if missing:
            raise ConfigError(f"method {m} has no runs on {', '.join(missing)}; every method needs runs on "
                              "every env")
    budgets = sorted(set(budgets)) if budgets else default_budgets(records)
    check_budgets(records, budgets)
    warn = warn or _stderr

    def row(env: str, m: str, metric: str, budget: int, scores: np.ndarray) -> dict:
        point, lo, hi = iqm_interval(scores, reps=reps)
        return dict(env=env, method=m, metric=metric, budget=int(budget), iqm=point, ci_low=lo, ci_high=hi,
                    n_runs=int(scores.shape[0]))

    rows = []
    for metric in METRICS:
        for budget in budgets:
            scores = env_scores(records, budget, metric, envs, methods)
            for m in methods:
                for env in envs:
                    rows.append(row(env, m, metric, budget, scores[m][env][:, None]))
            if len(envs) > 1:
                # warn about unequal run counts once, for the first matrices only
                first = (metric, budget) == (METRICS[0], budgets[0])
                mats = score_matrices(normalise_per_env(scores), envs, warn if first else None,
                                      note=f"the '{ALL_ENVS}' rows are ")
                for m in methods:
                    rows.append(row(ALL_ENVS, m, metric, budget, mats[m]))
    env_order = {env: i for i, env in enumerate([*envs, ALL_ENVS])}
    order = {m: i for i, m in enumerate(methods)}
    rows.sort(key=lambda r: (env_order[r["env"]], order[r["method"]], METRICS.index(r["metric"]), r["budget"]))
    return rows


# -- output -------------------------------------------------------------------------------------

def table_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items() if k in COLUMNS})
    return buf.getvalue()


def table_text(rows: Sequence[dict], digits: int = 1) -> str:
    """The table as aligned text for the console; the ``all`` rows (normalised, in [0, 1]) get
    three decimals, the per-env rows ``digits`` (1 for returns)."""
    head = ["env", "method", "metric", "budget", "IQM", "95% CI", "runs"]
    body = []
    for r in rows:
        d = 3 if r["env"] == ALL_ENVS else digits
        body.append([r["env"], r["method"], r["metric"], str(r["budget"]), f"{r['iqm']:.{d}f}",
                     f"[{r['ci_low']:.{d}f}, {r['ci_high']:.{d}f}]", str(r["n_runs"])])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {3, 4, 6}

    def fmt(line):
        return "  ".join(x.rjust(w) if i in right else x.ljust(w) for i, (x, w) in enumerate(zip(line, widths)))

    return "\n".join([fmt(head)] + [fmt(b) for b in body]).rstrip() + "\n"


def runs_summary(records: Sequence[RunRecord]) -> list[dict]:
    return [dict(run_dir=str(r.run_dir), method=r.method, env=r.env, agent=r.agent, replay=r.replay,
                 seeds=list(r.curves), last_step=r.last_step, total_steps=r.total_steps) for r in records]


__all__ = ["RunRecord", "METRICS", "COLUMNS", "ALL_ENVS", "NORMALISATION", "DEFAULT_REPS", "find_run_dirs",
           "load_run", "load_runs", "label_methods", "default_budgets", "curve_score", "env_scores",
           "normalise_per_env", "score_matrices", "seeded_bootstrap", "iqm", "iqm_interval", "aggregate",
           "table_csv", "table_text", "runs_summary"]
