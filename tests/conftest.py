"""Shared helpers: small, fast configurations on real environments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

SMALL = {
    "env": "Pendulum-v1",
    "total_steps": 600,
    "warmup_steps": 200,
    "eval_interval": 200,
    "eval_episodes": 2,
    "checkpoint_interval": 0,
    "buffer_size": 2000,
    "batch_size": 32,
    "progress_bar": False,
    "tensorboard": False,
    "agent.hidden_sizes": [16, 16],
}


@pytest.fixture
def small(tmp_path):
    """A function returning a small config mapping with a fresh run_dir."""
    counter = iter(range(1000))

    def make(**overrides):
        cfg = {**SMALL, "run_dir": str(tmp_path / f"run{next(counter)}")}
        cfg.update({k.replace("__", "."): v for k, v in overrides.items()})
        return cfg

    return make


def cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real ``replaylab`` entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "replaylab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def overrides(cfg: dict) -> list[str]:
    def fmt(v):
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(str(x) for x in v) + "]"
        return str(v).lower() if isinstance(v, bool) else str(v)

    return [f"{k}={fmt(v)}" for k, v in cfg.items()]


def checkpoint_arrays(run_dir: str | Path) -> dict[str, np.ndarray]:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    with np.load(ckpts[-1] / "arrays.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def progress_without_wall_clock(run_dir: str | Path) -> list[str]:
    lines = (Path(run_dir) / "progress.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = {i for i, name in enumerate(header) if name in ("wall_time", "sps") or name.startswith("time_")}
    return [",".join(x for i, x in enumerate(line.split(",")) if i not in drop) for line in lines]


def kill_after_checkpoint(run: dict, step: int, delay: float = 0.0, timeout: float = 240) -> Path:
    """Start ``replaylab train`` on ``run`` in a subprocess, SIGKILL it ``delay`` seconds
    after its step-``step`` checkpoint appears; returns the checkpoints folder."""
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "replaylab.cli", "train", *overrides(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpts = Path(run["run_dir"]) / "checkpoints"
    deadline = time.time() + timeout
    while time.time() < deadline and not (ckpts / f"step_{step:010d}").exists():
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return ckpts


def resumed_equals_uninterrupted(cfg: dict, tmp_path: Path, step: int, delay: float = 0.0,
                                 timeout: float = 300) -> tuple[dict, dict]:
    """Train ``cfg`` through the CLI once uninterrupted (``ref``) and once killed ``delay``
    seconds after its step-``step`` checkpoint and resumed (``run``); assert the kill came
    before the next checkpoint and that progress.csv and the final checkpoint's arrays are
    the same. Returns the two run configs."""
    ref = {**cfg, "run_dir": str(tmp_path / "ref")}
    assert cli("train", *overrides(ref), timeout=timeout * 2).returncode == 0
    run = {**cfg, "run_dir": str(tmp_path / "run")}
    ckpts = kill_after_checkpoint(run, step, delay=delay, timeout=timeout)
    following = min(step + cfg["checkpoint_interval"], cfg["total_steps"])  # the next checkpoint, or the final one
    assert not (ckpts / f"step_{following:010d}").exists(), "the kill came too late"
    r = cli("resume", run["run_dir"], timeout=timeout * 2)
    assert r.returncode == 0, r.stderr
    assert progress_without_wall_clock(ref["run_dir"]) == progress_without_wall_clock(run["run_dir"])
    xa, xb = checkpoint_arrays(ref["run_dir"]), checkpoint_arrays(run["run_dir"])
    assert xa.keys() == xb.keys()
    for k in xa:
        assert np.array_equal(xa[k], xb[k], equal_nan=True), k
    return ref, run


# meta:toy1d (SMRL's toy1d: goals and positions in [0.1, 10], start at 0): one step's reward
# tells where the goal is, so online inference (SMRL, CEMRL) pays at once. On its 8 test goals
# the best policy that ignores the task (walk to the median goal and stay) gets -194.9 per
# episode and walking straight to each goal -11.9 (benchmarks/toy_baselines.py toy1d 8);
# multi-task SAC (inference=none) with this budget gets -216.6 and -209.6 (2 seeds).
TOY1D_BUDGET = {"env": "meta:toy1d", "seeds": 2, "total_steps": 8000, "warmup_steps": 2000,
                   "eval_interval": 8000, "checkpoint_interval": 0, "buffer_size": 8000, "meta_batch": 8,
                   "test_tasks": 8, "eval_train_tasks": 0, "progress_bar": False, "tensorboard": False,
                   "agent.hidden_sizes": [64, 64], "agent.actor_lr": 1e-3, "agent.critic_lr": 1e-3,
                   "agent.temperature_lr": 1e-3}
