"""A grid of methods x envs x seeds, run one cell at a time, then one report.

A method is a replay method's name (``--methods uniform,nmer``) or, in a grid file, a
named set of run settings (``methods: {pearl: {inference: pearl}, sac: {inference: none}}``),
so agents, inference methods or any other settings can be compared the same way.

Each (method, env) cell is ONE replaylab run with ``seeds=S`` (the seeds are a vmapped
axis), written to ``OUT/runs/<env>-<method>``. The cells run sequentially. Re-running the
same grid continues it: a finished cell is skipped, an interrupted one resumes from its
newest checkpoint (or starts again if it had none). A cell directory that holds a run with
other settings is an error, never overwritten.

The report (:func:`report`) writes ``OUT/summary.csv``, ``OUT/summary.json`` and
``OUT/curves.png`` and prints the table.
"""

from __future__ import annotations

import difflib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from replaylab.analysis.aggregate import (
    LOGGING_KEYS, ALL_ENVS, CONFIDENCE, DEFAULT_REPS, NORMALISATION, RunRecord, aggregate, default_budgets, load_runs,
    runs_summary, table_csv, table_text)
from replaylab.config import show_value
from replaylab.errors import ConfigError

DEFAULT_SEEDS = 3
DEFAULT_OUT = "runs/compare"
GRID_KEYS = ("methods", "envs", "seeds", "out", "steps", "reps", "score", "overrides")
# Keys the grid sets per cell, and the option that sets them instead.
RESERVED = {"env": "--envs", "replay": "--methods", "seeds": "--seeds", "run_dir": "--out"}


@dataclass
class Grid:
    methods: list[str]
    envs: list[str]
    seeds: int = DEFAULT_SEEDS
    out: str = DEFAULT_OUT
    steps: list[int] | None = None  # step budgets; None: the last common evaluation step and its half
    reps: int = DEFAULT_REPS
    score: str = "return_mean"  # the progress.csv column compared, e.g. test_return_after_switch
    overrides: dict[str, Any] = field(default_factory=dict)  # flat dotted keys shared by every cell
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # method name -> its own settings

    def settings(self, method: str) -> dict[str, Any]:
        """The run settings that make ``method``: its variant's, or ``replay=method``."""
        return dict(self.variants[method]) if method in self.variants else {"replay": method}


# -- parsing the grid ------------------------------------------------------------------------------

def parse_names(value: Any, option: str) -> list[str]:
    """A comma-separated string or a list of names; non-empty, no repeats."""
    if isinstance(value, str):
        items = [x.strip() for x in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        items = [x.strip() for x in value]
    else:
        raise ConfigError(f"{option}={show_value(value)}: expected comma-separated names")
    if not items or any(not x for x in items):
        raise ConfigError(f"{option}={show_value(value)}: expected comma-separated names, none empty")
    repeated = sorted({x for x in items if items.count(x) > 1})
    if repeated:
        raise ConfigError(f"{option}={show_value(value)}: {', '.join(repeated)} given more than once")
    return items


def parse_int(value: Any, option: str, minimum: int = 1) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{option}={value}: expected an integer >= {minimum}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{option}={show_value(value)}: expected an integer >= {minimum}")
    return value


def parse_steps(value: Any, option: str = "--steps") -> list[int]:
    """Step budgets: '10000,30000' or a list of integers >= 1."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    out = []
    for x in items:
        if isinstance(x, str):
            try:
                x = int(x.strip())
            except ValueError:
                raise ConfigError(f"{option}={show_value(value)}: expected comma-separated integers >= 1, "
                                  "e.g. 10000,30000") from None
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ConfigError(f"{option}={show_value(value)}: expected comma-separated integers >= 1, e.g. 10000,30000")
        out.append(x)
    if not out:
        raise ConfigError(f"{option}={show_value(value)}: expected comma-separated integers >= 1, e.g. 10000,30000")
    return sorted(set(out))


def check_methods(methods: Sequence[str], variants: Mapping[str, Any] = {}) -> None:
    from replaylab.replay.methods import SAMPLERS

    for m in methods:
        if m not in SAMPLERS and m not in variants:
            close = difflib.get_close_matches(m, list(SAMPLERS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"--methods: unknown replay method '{m}'; expected some of {', '.join(SAMPLERS)}{hint}")


def load_grid_file(path: str | Path) -> dict[str, Any]:
    """A grid file (YAML, TOML or JSON): methods, envs, seeds, out, steps, reps, and overrides,
    a mapping of run settings shared by every cell (flat dotted keys or nested)."""
    from replaylab.config import load_file

    flat = load_file(path, keep_empty=True)  # ``sac: {}`` is a method with the shared settings only
    grid: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    variants: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("overrides.") and value == {}:
            continue  # an empty nested mapping sets nothing
        elif key.startswith("overrides."):
            overrides[key[len("overrides."):]] = value
        elif key.startswith("methods."):  # a named method: methods: {NAME: {setting: value, ...}}
            name, _, setting = key[len("methods."):].partition(".")
            if not setting and value == {}:
                variants.setdefault(name, {})
                continue
            if not setting:
                raise ConfigError(f"config file '{path}': methods.{name}: expected a mapping of run settings")
            variants.setdefault(name, {})[setting] = value
        elif key == "overrides":
            if value not in (None, {}):
                raise ConfigError(f"config file '{path}': overrides: expected a mapping of run settings")
        elif key in GRID_KEYS:
            grid[key] = value
        else:
            close = difflib.get_close_matches(key, list(GRID_KEYS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else \
                f"; a grid file takes {', '.join(GRID_KEYS)} (run settings go under overrides:)"
            raise ConfigError(f"config file '{path}': unknown key '{key}'{hint}")
    grid["overrides"] = overrides
    if variants:
        grid["methods"], grid["variants"] = list(variants), variants
    return grid


def resolve_grid(file_values: Mapping[str, Any] | None, options: Mapping[str, Any],
                 overrides: Mapping[str, Any]) -> Grid:
    """Merge a grid file's values, command-line options (which win; None means not given) and
    key=value overrides (which win over the file's overrides)."""
    values = {k: v for k, v in (file_values or {}).items() if k != "overrides"}
    values.update({k: v for k, v in options.items() if v is not None})
    if "methods" not in values or "envs" not in values:
        missing = " and ".join(f"--{k}" for k in ("methods", "envs") if k not in values)
        raise ConfigError(f"{missing} not given: expected --methods and --envs, --config FILE, or --runs DIR")
    methods = parse_names(values["methods"], "--methods")
    variants = dict((file_values or {}).get("variants") or {})
    check_methods(methods, variants)
    envs = parse_names(values["envs"], "--envs")
    merged = {**dict((file_values or {}).get("overrides") or {}), **overrides}
    for key, option in RESERVED.items():
        if key in merged:
            raise ConfigError(f"{key}={show_value(merged[key])}: compare sets {key} per cell; use {option} instead")
    out = values.get("out", DEFAULT_OUT)
    if not isinstance(out, str) or not out:
        raise ConfigError(f"--out={show_value(out)}: expected a directory path")
    return Grid(methods=methods, envs=envs, seeds=parse_int(values.get("seeds", DEFAULT_SEEDS), "--seeds"),
                out=out, steps=parse_steps(values["steps"]) if values.get("steps") is not None else None,
                reps=parse_int(values.get("reps", DEFAULT_REPS), "--reps"),
                score=parse_score(values.get("score", "return_mean")), overrides=merged,
                variants={m: variants[m] for m in methods if m in variants})


def parse_score(value: Any) -> str:
    if not isinstance(value, str) or not value.replace("_", "").isalnum():
        raise ConfigError(f"--score={show_value(value)}: expected a progress.csv column name, e.g. return_mean "
                          "or test_return_after_switch")
    return value


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


# -- the cells -------------------------------------------------------------------------------------

def cell_dir(out: str | Path, env: str, method: str) -> Path:
    safe_env = env.replace(":", "_").replace("/", "_")
    return Path(out) / "runs" / f"{safe_env}-{method}"


def cell_configs(grid: Grid) -> list[tuple[str, str, Any]]:
    """(env, method, Config) for every cell, env-major, all validated before anything trains.

    A ``replay.<param>`` override goes to the methods that take that parameter.
    """
    from replaylab.config import from_flat
    from replaylab.replay.methods import SAMPLERS

    shared = {k: v for k, v in grid.overrides.items() if not k.startswith("replay.")}
    replay = {k: v for k, v in grid.overrides.items() if k.startswith("replay.")}
    replay_of = {m: grid.settings(m).get("replay", shared.get("replay", "uniform")) for m in grid.methods}
    for key in replay:
        if not any(key[len("replay."):] in SAMPLERS[r].params() for r in replay_of.values()):
            raise ConfigError(f"unknown key '{key}': none of the methods {', '.join(grid.methods)} takes it")
    cells = []
    for env in grid.envs:
        for method in grid.methods:
            params = {k: v for k, v in replay.items() if k[len("replay."):] in SAMPLERS[replay_of[method]].params()}
            cfg = from_flat({**shared, **params, **grid.settings(method), "env": env, "seeds": grid.seeds,
                             "run_dir": str(cell_dir(grid.out, env, method))})
            cells.append((env, method, cfg))
    return cells


def _comparable(flat: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json.loads(json.dumps(v)) for k, v in flat.items() if k not in LOGGING_KEYS}


def cell_state(run_dir: Path, cfg) -> str:
    """'new', 'finished', 'resume' (unfinished, with a checkpoint) or 'restart' (unfinished, no
    checkpoint). A directory holding a run with other settings raises a ConfigError."""
    from replaylab.api import load_run_config
    from replaylab.training.logs import read_progress

    if not (run_dir / "config.json").is_file():
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir}: exists and is not a replaylab run directory; remove it or choose "
                              "another --out")
        return "new"
    have, want = _comparable(load_run_config(run_dir).to_flat()), _comparable(cfg.to_flat())
    for key in sorted(set(have) | set(want)):
        if have.get(key) != want.get(key):
            raise ConfigError(f"{run_dir}: holds a run with {key}={show_value(have.get(key))} but the grid asks for "
                              f"{key}={show_value(want.get(key))}; choose another --out or remove that directory")
    progress = run_dir / "progress.csv"
    if progress.is_file():
        last: dict[int, int] = {}
        for r in read_progress(progress):
            if isinstance(r.get("seed"), int) and isinstance(r.get("env_step"), int):
                last[r["seed"]] = max(last.get(r["seed"], 0), r["env_step"])
        if all(last.get(s, 0) >= cfg.total_steps for s in cfg.seed_list):
            return "finished"
    if any(p.is_dir() for p in (run_dir / "checkpoints").glob("step_*")):
        return "resume"
    return "restart"


def run_grid(grid: Grid, echo: Callable[[str], None] = print) -> list[dict]:
    """Train every unfinished cell, one after the other, then report. Returns the summary rows."""
    from replaylab import api

    cells = cell_configs(grid)
    states = [cell_state(Path(cfg.run_dir), cfg) for _, _, cfg in cells]  # every check before any training
    if grid.steps:
        cfg = cells[0][2]  # every cell shares these settings
        total, first = cfg.total_steps, min(cfg.eval_interval, cfg.total_steps)
        for b in grid.steps:
            if b > total:
                raise ConfigError(f"--steps {b}: beyond the grid's total_steps={total}")
            if b < first:
                raise ConfigError(f"--steps {b}: before the first evaluation, at step {first}")
    n = len(cells)
    echo(f"compare: {_count(len(grid.methods), 'method')} x {_count(len(grid.envs), 'env')} = "
         f"{_count(n, 'run')} of {_count(grid.seeds, 'seed')} x {cells[0][2].total_steps} steps, into {grid.out}")
    for i, ((env, method, cfg), state) in enumerate(zip(cells, states), 1):
        run_dir = Path(cfg.run_dir)
        head = f"[{i}/{n}] {env} {method}"
        if state == "finished":
            echo(f"{head}: finished already, skipped ({run_dir})")
            continue
        t = time.perf_counter()
        if state == "resume":
            echo(f"{head}: resuming from its newest checkpoint ({run_dir})")
            run = api.resume(run_dir)
        else:
            if state == "restart":
                echo(f"{head}: was interrupted before its first checkpoint; starting it again")
                shutil.rmtree(run_dir)
            echo(f"{head}: training -> {run_dir}")
            run = api.train(cfg)
        r = np.asarray(run.final_returns)
        echo(f"{head}: done in {time.perf_counter() - t:.0f} s; final return {r.mean():.1f} +- {r.std():.1f} "
             f"over {_count(len(r), 'seed')}")
    records = load_runs([Path(cfg.run_dir) for _, _, cfg in cells], labels=[method for _, method, _ in cells],
                        score=grid.score)
    return report(records, grid.out, grid.steps, grid.reps, methods=grid.methods, grid=grid, echo=echo,
                  score=grid.score)


# -- the report ------------------------------------------------------------------------------------

def report(records: Sequence[RunRecord], out: str | Path, budgets: Sequence[int] | None = None,
           reps: int = DEFAULT_REPS, methods: Sequence[str] | None = None, grid: Grid | None = None,
           echo: Callable[[str], None] = print, score: str = "return_mean") -> list[dict]:
    """Aggregate ``records`` (their ``score`` column); write summary.csv, summary.json and
    curves.png into ``out``; print. The metric ``return`` is the score at the budget."""
    from replaylab import __version__
    from replaylab.analysis.plot import plot_curves
    from replaylab.training.checkpoint import write_atomic

    budgets = sorted(set(budgets)) if budgets else default_budgets(records)
    rows = aggregate(records, budgets, reps=reps, methods=methods)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "summary.csv", table_csv(rows))
    summary = {
        "rows": rows,
        "budgets": list(budgets),
        "envs": sorted({r.env for r in records}),
        "methods": list(dict.fromkeys(r["method"] for r in rows)),
        "score": score,
        "metrics": {"return": f"{score} at the budget (the last evaluation at or before it)",
                    "auc": f"mean {score} over the evaluations at or before the budget"},
        "estimator": "IQM; per env: over that env's runs, raw scores; env 'all' (more than one env): over "
                     "runs x envs of scores normalised per env, stratified bootstrap over runs within each env; "
                     "percentile interval",
        "normalisation": NORMALISATION if any(r["env"] == ALL_ENVS for r in rows) else None,
        "confidence": CONFIDENCE,
        "reps": reps,
        "runs": runs_summary(records),
        "grid": asdict(grid) if grid is not None else None,
        "replaylab_version": __version__,
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    plot_curves(records, out / "curves.png", methods=methods, score=score)
    echo("")
    echo(f"IQM per env over its seeds, 95% stratified-bootstrap CIs ({reps} resamples); metrics: "
         f"return ({score} at the budget), auc (its mean over the evaluations up to the budget)")
    if summary["normalisation"]:
        echo(summary["normalisation"])
    echo(table_text(rows, digits=1 if score == "return_mean" else 2).rstrip("\n"))
    echo(f"wrote {out / 'summary.csv'}, {out / 'summary.json'}, {out / 'curves.png'}")
    return rows


def report_runs(paths: Sequence[str | Path], out: str | Path, budgets: Sequence[int] | None = None,
                reps: int = DEFAULT_REPS, echo: Callable[[str], None] = print, score: str = "return_mean") -> list[dict]:
    """Report on finished run directories (or folders of them) without training anything."""
    from replaylab.analysis.aggregate import find_run_dirs

    records = load_runs(find_run_dirs(paths), score=score)
    return report(records, out, budgets, reps, echo=echo, score=score)


__all__ = ["Grid", "GRID_KEYS", "parse_names", "parse_int", "parse_steps", "load_grid_file", "resolve_grid",
           "cell_dir", "cell_configs", "cell_state", "run_grid", "report", "report_runs"]
