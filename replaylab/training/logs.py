"""What a run writes while it trains: progress.csv, TensorBoard events, wandb, the console.

``progress.csv`` has one row per evaluation per seed. On resume it is cut back to the
rows that existed at the checkpoint, so a resumed run's file equals an uninterrupted
run's (wall-clock columns aside); TensorBoard is told to purge the steps after it.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from replaylab.training.checkpoint import write_atomic

WALL_CLOCK_COLUMNS = ("wall_time", "sps")


class ProgressCSV:
    def __init__(self, path: Path, columns: list[str], keep_rows: int | None = None):
        self.path = path
        self.columns = columns
        self.rows = 0
        if keep_rows is None or not path.exists():
            write_atomic(path, ",".join(columns) + "\n")
        else:  # resume: keep the header and the first keep_rows rows
            lines = path.read_text().splitlines(keepends=True)
            write_atomic(path, "".join(lines[: 1 + keep_rows]))
            self.rows = min(keep_rows, len(lines) - 1)

    def write(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n")
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
        with open(self.path, "a") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self.rows += len(rows)


def _fmt(v):
    if isinstance(v, float):
        return repr(v)
    return v


def read_progress(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            try:
                r[k] = int(v)
            except ValueError:
                try:
                    r[k] = float(v)
                except ValueError:
                    pass
    return rows


class Loggers:
    """TensorBoard and wandb sinks for scalars keyed by env step."""

    def __init__(self, run_dir: Path, config: dict, tensorboard: bool, wandb: bool, wandb_mode: str,
                 wandb_project: str, purge_step: int | None = None):
        self.tb = None
        self.wandb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step, flush_secs=30)
        if wandb:
            import wandb as wb

            self.wandb = wb.init(project=wandb_project, mode=wandb_mode, dir=str(run_dir), config=config,
                                 name=run_dir.name, resume="allow", id=_wandb_id(run_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if math.isfinite(v):  # NaN marks "not measured" (no train tasks evaluated, ...); a diverged
                    # run stops at its first non-finite loss and progress.csv keeps it
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({**values, "env_step": step}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]


class Console:
    """A tqdm bar: env steps, steps per second, last evaluation return (mean over seeds)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TaskCSV:
    """``tasks.csv`` of a meta-RL run: per evaluation, seed and evaluated task, the task's
    set and parameters and the return of each adaptation episode; with task switches
    (``protocol.switches``) also the last episode's return before and after its first
    switch and whether it switched (1/0; without a switch ``return_after_switch`` is 0)."""

    SWITCH_COLUMNS = ("return_before_switch", "return_after_switch", "switched")

    def __init__(self, path: Path, task_set, protocol, num_seeds: int, keep_rounds: int | None = None):
        """``keep_rounds``: on resume, the evaluations that were written before the checkpoint."""
        self.task_set, self.protocol = task_set, protocol
        self.switches = bool(getattr(protocol, "switches", False))
        self.columns = (["env_step", "seed", "task", "split"] + list(task_set.names)
                        + [f"return_{k}" for k in range(protocol.episodes)]
                        + (list(self.SWITCH_COLUMNS) if self.switches else []))
        keep = None if keep_rounds is None else keep_rounds * num_seeds * len(protocol.tasks)
        self._csv = ProgressCSV(path, self.columns, keep_rows=keep)

    def write(self, env_step: int, seeds, result) -> None:
        """``result``: the ``evaluate.EvalResult`` of this evaluation."""
        returns = result.returns
        rows = []
        for i, seed in enumerate(seeds):
            for j, task in enumerate(self.protocol.tasks):
                row = {"env_step": env_step, "seed": seed, "task": int(task),
                       "split": "test" if j < self.protocol.num_test else "train"}
                row.update({name: float(v) for name, v in zip(self.task_set.names, self.task_set.params[task])})
                row.update({f"return_{k}": float(returns[i, j, k]) for k in range(returns.shape[2])})
                if self.switches:
                    row.update(return_before_switch=float(result.before_switch[i, j, -1]),
                               return_after_switch=float(result.after_switch[i, j, -1]),
                               switched=int(result.switched[i, j, -1]))
                rows.append(row)
        self._csv.write(rows)
