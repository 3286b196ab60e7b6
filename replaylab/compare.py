"""A sweep: a grid of methods x swept settings x envs x seeds, then one report.

A method is a replay method's name (``--methods uniform,nmer``) or, in a grid file, a
named set of run settings (``methods: {pearl: {inference: pearl}, sac: {inference: none}}``),
so agents, inference methods or any other settings can be compared the same way. A sweep
(``sweep: {replay_ratio: [1, 8], agent.lr: [3e-4, 1e-3]}`` or ``--sweep replay_ratio=1,8``)
crosses every method with every combination of the swept values.

Each (method, setting, env) cell is ONE replaylab run with ``seeds=S`` (the seeds are a
vmapped axis), written to ``OUT/runs/<env>-<label>``. The cells run on an executor
(:mod:`replaylab.executors`): this process, a local pool of workers, or Ray. Re-running the
same grid continues it, whichever executor ran it before: a finished cell is skipped, an
interrupted one resumes from its newest checkpoint (or starts again if it had none). A cell
that fails is reported with its error and does not stop the others. A cell directory that
holds a run with other settings is an error, never overwritten.

The report (:func:`report`) writes ``OUT/summary.csv``, ``OUT/summary.json`` and
``OUT/curves.png`` and prints the table.
"""

from __future__ import annotations

import difflib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from replaylab.analysis.aggregate import (
    LOGGING_KEYS, ALL_ENVS, CONFIDENCE, DEFAULT_REPS, NORMALISATION, RunRecord, aggregate, default_budgets, load_runs,
    runs_summary, setting_label, table_csv, table_text)
from replaylab.config import _number, parse_value, show_value
from replaylab.errors import ConfigError
from replaylab.executors import Job, Outcome

DEFAULT_SEEDS = 3
DEFAULT_OUT = "runs/compare"
GRID_KEYS = ("methods", "envs", "seeds", "out", "steps", "reps", "score", "sweep", "overrides")
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
    sweep: dict[str, list[Any]] = field(default_factory=dict)  # setting -> the values crossed

    def settings(self, method: str) -> dict[str, Any]:
        """The run settings that make ``method``: its variant's, or ``replay=method``."""
        return dict(self.variants[method]) if method in self.variants else {"replay": method}

    def replay_of(self, method: str) -> str:
        return self.settings(method).get("replay", self.overrides.get("replay", "uniform"))

    def labels(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, run settings) per method x combination of swept values, e.g.
        ('nmer replay_ratio=8', {'replay': 'nmer', 'replay_ratio': 8}); a swept ``replay.<param>``
        is crossed only with the methods that take it, like an override."""
        from replaylab.replay.methods import SAMPLERS

        out = []
        for m in self.methods:
            takes = SAMPLERS[self.replay_of(m)].params()
            combos: list[dict[str, Any]] = [{}]
            for key, values in self.sweep.items():
                if not key.startswith("replay.") or key[len("replay."):] in takes:
                    combos = [{**c, key: v} for c in combos for v in values]
            out += [(" ".join([m, *(setting_label(k, v) for k, v in c.items())]), {**self.settings(m), **c})
                    for c in combos]
        return out


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


def parse_float(value: Any, option: str, minimum: float = 0.0) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if isinstance(value, bool) or not np.isfinite(x) or x < minimum:
        raise ConfigError(f"{option}={show_value(value)}: expected a number >= {minimum:g}")
    return x


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


def _split_top(text: str) -> list[str]:
    """Split on commas outside brackets: '[64,64],[256,256]' -> ['[64,64]', '[256,256]']."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def _number_or_text(value: Any) -> Any:
    """'3e-4' (YAML reads it as text) -> 0.0003, so equal numbers are one swept value."""
    x = _number(value) if isinstance(value, str) else value
    return x if not isinstance(x, float) or np.isfinite(x) else value


def parse_sweep(items: Mapping[str, Any] | Sequence[str]) -> dict[str, list[Any]]:
    """Swept settings from a grid file's ``sweep:`` mapping (a list or one value per key) or from
    ``--sweep key=v1,v2`` options (split on commas outside brackets, so
    ``agent.hidden_sizes=[64,64],[256,256]`` is two values); each list non-empty, no repeats."""
    if not isinstance(items, Mapping):
        pairs: dict[str, Any] = {}
        for item in items:
            key, eq, text = item.partition("=")
            if not eq or not key.strip() or not text.strip():
                raise ConfigError(f"--sweep {item}: expected key=value1,value2,... e.g. --sweep replay_ratio=1,8")
            if key.strip() in pairs:
                raise ConfigError(f"--sweep {item}: {key.strip()} swept more than once")
            pairs[key.strip()] = [parse_value(x) for x in _split_top(text)]
        items = pairs
    sweep = {}
    for key, values in items.items():
        values = [_number_or_text(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        if key in RESERVED:
            raise ConfigError(f"sweep {key}: compare sets {key} per cell; use {RESERVED[key]} instead")
        shown = [json.dumps(v, sort_keys=True) for v in values]
        if not values or len(set(shown)) < len(shown):
            raise ConfigError(f"sweep {key}={show_value(values)}: expected a non-empty list of distinct values")
        sweep[key] = values
    return sweep


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
    sweep: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("overrides.") and value == {}:
            continue  # an empty nested mapping sets nothing
        elif key.startswith("overrides."):
            overrides[key[len("overrides."):]] = value
        elif key.startswith("sweep."):
            sweep[key[len("sweep."):]] = value
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
    if sweep:
        grid["sweep"] = parse_sweep(sweep)
    elif "sweep" in grid and grid.pop("sweep") not in (None, {}):
        raise ConfigError(f"config file '{path}': sweep: expected a mapping of settings to lists of values")
    if variants:
        grid["methods"], grid["variants"] = list(variants), variants
    return grid


def resolve_grid(file_values: Mapping[str, Any] | None, options: Mapping[str, Any],
                 overrides: Mapping[str, Any]) -> Grid:
    """Merge a grid file's values, command-line options (which win; None means not given; a
    ``sweep`` option adds to the file's) and key=value overrides (which win over the file's
    overrides)."""
    sweep = {**dict((file_values or {}).get("sweep") or {}), **dict(options.get("sweep") or {})}
    options = {k: v for k, v in options.items() if k != "sweep"}
    values = {k: v for k, v in (file_values or {}).items() if k not in ("overrides", "sweep")}
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
    for key in sweep:
        if key in merged:
            raise ConfigError(f"{key}: both swept and set for every cell; drop one")
    out = values.get("out", DEFAULT_OUT)
    if not isinstance(out, str) or not out:
        raise ConfigError(f"--out={show_value(out)}: expected a directory path")
    return Grid(methods=methods, envs=envs, seeds=parse_int(values.get("seeds", DEFAULT_SEEDS), "--seeds"),
                out=out, steps=parse_steps(values["steps"]) if values.get("steps") is not None else None,
                reps=parse_int(values.get("reps", DEFAULT_REPS), "--reps"),
                score=parse_score(values.get("score", "return_mean")), overrides=merged,
                variants={m: variants[m] for m in methods if m in variants}, sweep=sweep)


def parse_score(value: Any) -> str:
    if not isinstance(value, str) or not value.replace("_", "").isalnum():
        raise ConfigError(f"--score={show_value(value)}: expected a progress.csv column name, e.g. return_mean "
                          "or test_return_after_switch")
    return value


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


# -- the cells -------------------------------------------------------------------------------------

def _span(values) -> str:
    """'16000', or '8000-16000' where a sweep varies it."""
    values = sorted(set(values))
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def cell_dir(out: str | Path, env: str, label: str) -> Path:
    """OUT/runs/ENV-LABEL, e.g. 'Hopper-v5-nmer_replay_ratio-8' (no '=': the CLI would read a
    path holding one as a key=value setting)."""
    name = f"{env}-{label}".replace("=", "-")
    return Path(out) / "runs" / "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def cell_configs(grid: Grid) -> list[tuple[str, str, Any]]:
    """(env, label, Config) for every cell, env-major, all validated before anything trains.

    A ``replay.<param>`` override goes to the methods that take that parameter.
    """
    from replaylab.config import from_flat
    from replaylab.replay.methods import SAMPLERS

    shared = {k: v for k, v in grid.overrides.items() if not k.startswith("replay.")}
    replay = {k: v for k, v in grid.overrides.items() if k.startswith("replay.")}
    labels = grid.labels()
    replay_of = {label: settings.get("replay", shared.get("replay", "uniform")) for label, settings in labels}
    for key in [*replay, *(k for k in grid.sweep if k.startswith("replay."))]:
        if not any(key[len("replay."):] in SAMPLERS[r].params() for r in replay_of.values()):
            raise ConfigError(f"unknown key '{key}': none of the methods {', '.join(grid.methods)} takes it")
    cells = []
    for env in grid.envs:
        for label, settings in labels:
            params = {k: v for k, v in replay.items() if k[len("replay."):] in SAMPLERS[replay_of[label]].params()}
            cfg = from_flat({**shared, **params, **settings, "env": env, "seeds": grid.seeds,
                             "run_dir": str(cell_dir(grid.out, env, label))})
            cells.append((env, label, cfg))
    dirs = [cfg.run_dir for _, _, cfg in cells]
    clash = sorted({d for d in dirs if dirs.count(d) > 1})
    if clash:
        raise ConfigError(f"two cells would share the directory {clash[0]}; rename a method")
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


def cell_job(out: str | Path, env: str, label: str, cfg, state: str) -> Job:
    """The command that brings a cell to its end: ``train`` its config, written to
    OUT/cells/, or ``resume`` its run directory."""
    from replaylab.training.checkpoint import write_atomic

    run_dir = Path(cfg.run_dir)
    log = Path(out) / "logs" / f"{run_dir.name}.log"
    if state == "resume":
        return Job(f"{env} {label}", ("resume", str(run_dir)), log)
    if state == "restart":
        shutil.rmtree(run_dir)
    path = Path(out) / "cells" / f"{run_dir.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(cfg.to_flat(), indent=1) + "\n")
    return Job(f"{env} {label}", ("train", str(path)), log)


def _run_here(job: Job) -> None:
    """The in-process executor's way of running a cell's command."""
    from replaylab import api
    from replaylab.config import resolve

    action, target = job.command
    api.train(resolve(target)) if action == "train" else api.resume(target)


def run_grid(grid: Grid, echo: Callable[[str], None] = print, workers: int | None = None, ray: str | None = None,
             cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0) -> tuple[list[dict], list[Outcome]]:
    """Train every unfinished cell on an executor (``ray`` address, else ``workers`` local
    processes; default one per core; 1: in this process), then report.
    Returns the summary rows and the failed cells' outcomes."""
    from replaylab import executors

    cells = cell_configs(grid)
    states = [cell_state(Path(cfg.run_dir), cfg) for _, _, cfg in cells]  # every check before any training
    shared = len({(cfg.total_steps, cfg.eval_interval) for _, _, cfg in cells}) == 1  # unless swept
    for b in grid.steps or ():
        for env, label, cfg in cells:
            the, of_cell = ("the grid's ", "") if shared else ("", f" of cell '{env} {label}'")
            first = min(cfg.eval_interval, cfg.total_steps)
            if b > cfg.total_steps:
                raise ConfigError(f"--steps {b}: beyond {the}total_steps={cfg.total_steps}{of_cell}")
            if b < first:
                raise ConfigError(f"--steps {b}: before {the}first evaluation, at step {first}{of_cell}")
    n, labels = len(cells), [label for label, _ in grid.labels()]
    workers = workers or executors.default_workers(sum(st != "finished" for st in states))
    where = f"on Ray ({ray})" if ray else "in this process" if workers == 1 else f"on {workers} local workers"
    what = _count(len(grid.methods), "method") + (f" in {_count(len(labels), 'setting')}" if grid.sweep else "")
    echo(f"compare: {what} x {_count(len(grid.envs), 'env')} = {_count(n, 'run')} of "
         f"{_count(grid.seeds, 'seed')} x {_span(cfg.total_steps for _, _, cfg in cells)} steps, {where}, into {grid.out}")
    heads, jobs = {}, []
    for i, ((env, label, cfg), state) in enumerate(zip(cells, states), 1):
        if state == "finished":
            echo(f"[{i}/{n}] {env} {label}: finished already, skipped ({cfg.run_dir})")
            continue
        if state == "resume":
            echo(f"[{i}/{n}] {env} {label}: resuming from its newest checkpoint ({cfg.run_dir})")
        elif state == "restart":
            echo(f"[{i}/{n}] {env} {label}: was interrupted before its first checkpoint; starting it again")
        jobs.append(cell_job(grid.out, env, label, cfg, state))
        heads[jobs[-1]] = (f"[{i}/{n}] {env} {label}", Path(cfg.run_dir))

    def on_event(kind: str, job: Job, what) -> None:
        head, run_dir = heads[job]
        if kind == "start":
            echo(f"{head}: training -> {run_dir} ({what}" + (f"; log {job.log})" if what != "this process" else ")"))
        elif what.error:
            echo(f"{head}: FAILED after {what.seconds:.0f} s: {what.error}")
        else:
            echo(f"{head}: done in {what.seconds:.0f} s; {_final(run_dir, grid.score)}")

    if ray:
        outcomes = executors.run_ray(jobs, ray, cpus_per_cell, gpus_per_cell, on_event)
    elif workers == 1:
        outcomes = executors.run_inline(jobs, _run_here, on_event)
    else:
        outcomes = executors.run_pool(jobs, workers, on_event)
    failed = [o for o in outcomes if o.error]
    failed_dirs = {heads[o.job][1] for o in failed}
    dropped = {label for _, label, cfg in cells if Path(cfg.run_dir) in failed_dirs}  # reported on no env
    ok = [(env, label, cfg) for env, label, cfg in cells if label not in dropped]
    rows = []
    if ok:
        records = load_runs([Path(cfg.run_dir) for _, _, cfg in ok], labels=[label for _, label, _ in ok],
                            score=grid.score)
        rows = report(records, grid.out, grid.steps, grid.reps, methods=labels, grid=grid, echo=echo,
                      score=grid.score, failed=failed)
    else:  # nothing to aggregate; the summary still says what failed
        from replaylab.training.checkpoint import write_atomic

        write_atomic(Path(grid.out) / "summary.json", json.dumps(
            {"rows": [], "methods": [], "failed": _failed_list(failed), "grid": asdict(grid)}, indent=1) + "\n")
    for o in failed:
        echo(f"failed: {o.job.name}: {o.error} (log: {o.job.log})")
    return rows, failed


def _failed_list(failed: Sequence[Outcome]) -> list[dict]:
    return [{"cell": o.job.name, "error": o.error, "log": str(o.job.log)} for o in failed]


def _final(run_dir: Path, score: str) -> str:
    """'final SCORE X +- Y over S seeds', from the run's newest evaluation per seed."""
    from replaylab.analysis.aggregate import load_run

    try:
        finals = np.array([curve[-1][1] for curve in load_run(run_dir, score).curves.values() if curve])
    except ConfigError as e:  # e.g. --score names no column of this run: the report says so later
        return f"(no {score}: {e})"
    if not len(finals):
        return "no evaluation yet"
    return f"final {score} {finals.mean():.1f} +- {finals.std():.1f} over {_count(len(finals), 'seed')}"


# -- the report ------------------------------------------------------------------------------------

def report(records: Sequence[RunRecord], out: str | Path, budgets: Sequence[int] | None = None,
           reps: int = DEFAULT_REPS, methods: Sequence[str] | None = None, grid: Grid | None = None,
           echo: Callable[[str], None] = print, score: str = "return_mean",
           failed: Sequence[Outcome] = ()) -> list[dict]:
    """Aggregate ``records`` (their ``score`` column); write summary.csv, summary.json and
    curves.png into ``out``; print. The metric ``return`` is the score at the budget.
    ``failed`` cells are listed in summary.json with their errors."""
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
        "failed": _failed_list(failed),
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


__all__ = ["Grid", "GRID_KEYS", "parse_names", "parse_int", "parse_steps", "parse_sweep", "load_grid_file",
           "resolve_grid", "cell_dir", "cell_configs", "cell_state", "cell_job", "run_grid", "report", "report_runs"]
