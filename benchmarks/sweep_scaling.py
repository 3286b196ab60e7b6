"""How sweeps scale on this machine: local workers, and seeds vmapped in one process.

1. Workers: a grid of 8 short cells (uniform, nmer x replay_ratio 1, 2, 4, 8 on Pendulum-v1,
   2 seeds each) through ``replaylab compare`` with ``--workers 1`` (one after the other in one
   process) and ``--workers N`` (N worker processes, one core each): wall time and its ratio.
2. Seeds: S seeds trained at once in one process (one run, ``seeds=S``, vmapped) against the
   same S seeds as S single-seed runs on N worker processes (``--sweep seed=0,...,S-1``, the
   best a user without vmapping could do): wall time and its ratio.

Every measurement is the full command a user would run, start-up and compiling included (the
persistent compilation cache is cleared per measurement so every variant compiles once).
Prints a table and writes benchmarks/results/sweep_scaling.json.

    python benchmarks/sweep_scaling.py [--seeds 8] [--steps 3000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "sweep_scaling.json"


def settings(steps: int) -> list[str]:
    return [f"total_steps={steps}", f"warmup_steps={min(1000, steps // 2)}", f"eval_interval={steps}",
            "eval_episodes=2", f"buffer_size={steps}", "batch_size=128", "checkpoint_interval=0",
            "progress_bar=false", "tensorboard=false", "agent.hidden_sizes=[64,64]"]


def timed(args: list[str], cache: Path) -> float:
    """Wall seconds of ``replaylab compare ARGS`` with a fresh compilation cache."""
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, REPLAYLAB_JAX_CACHE=str(cache))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "replaylab", "compare", "--reps", "100", *args], env=env,
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed: replaylab compare {' '.join(args)}\n{r.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep_scaling_"))
    cache = tmp / "jax_cache"
    grid = ["--methods", "uniform,nmer", "--envs", "Pendulum-v1", "--sweep", "replay_ratio=1,2,4,8", "--seeds", "2",
            *settings(a.steps)]
    rows = []
    one = timed([*grid, "--workers", "1", "--out", str(tmp / "grid1")], cache)
    many = timed([*grid, "--workers", str(a.workers), "--out", str(tmp / "gridN")], cache)
    rows.append({"what": "8 cells, --workers 1 vs --workers N", "a_s": one, "b_s": many, "ratio": one / many})
    seeds = ",".join(str(s) for s in range(a.seeds))
    vmapped = timed(["--methods", "uniform", "--envs", "Pendulum-v1", "--seeds", str(a.seeds), "--workers", "1",
                     "--out", str(tmp / "vmapped"), *settings(a.steps)], cache)
    processes = timed(["--methods", "uniform", "--envs", "Pendulum-v1", "--seeds", "1", "--sweep", f"seed={seeds}",
                       "--workers", str(a.workers), "--out", str(tmp / "processes"), *settings(a.steps)], cache)
    rows.append({"what": f"{a.seeds} seeds: 1 process (vmapped) vs {a.seeds} processes on N workers",
                 "a_s": vmapped, "b_s": processes, "ratio": processes / vmapped})
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"N = {a.workers} workers on {len(os.sched_getaffinity(0))} cores; {a.steps} env steps per run, "
          "Pendulum-v1, SAC 64x64, batch 128")
    print(f"{'measurement':<62} {'A (s)':>8} {'B (s)':>8} {'gain':>6}")
    for r in rows:
        print(f"{r['what']:<62} {r['a_s']:8.1f} {r['b_s']:8.1f} {r['ratio']:5.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "rows": rows, "workers": a.workers, "cores": len(os.sched_getaffinity(0)), "seeds": a.seeds,
        "steps": a.steps, "machine": platform.processor() or platform.machine(),
        "note": "gain: row 1 = workers-1 time / workers-N time; row 2 = S-process time / vmapped time; "
                "wall time of the whole command, start-up and compiling included"}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
