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
