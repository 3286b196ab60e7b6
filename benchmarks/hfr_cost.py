"""What hindsight-foresight relabelling costs per trajectory, at 50 and 100 train tasks.

For each family and train-task count: fill a replay with random-policy episodes through
the real loop's pieces (CEMRL + DSAC, DMRLAD's networks), then time one seed's

- ``relabel_episode``: one trajectory relabelled for every train task, encoded, its utilities
  at every task's start states, the choice and the copy written (per trajectory);
- ``relabel_upkeep``: every task's log-partition estimate (once per refresh).

Medians over repeats after compilation; prints a table and writes
benchmarks/results/hfr_cost.json. Run: ``.venv/bin/python benchmarks/hfr_cost.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from replaylab.config import from_flat
from replaylab.training.loop import Trainer

OUT = Path(__file__).parent / "results" / "hfr_cost.json"
CASES = [("sparse-point-robot", 50), ("sparse-point-robot", 100), ("cheetah-vel-sparse", 50),
         ("cheetah-vel-sparse", 100)]


def timed(fn, state, repeats: int) -> tuple[object, float]:
    state = jax.block_until_ready(fn(state))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state = jax.block_until_ready(fn(state))
        times.append(time.perf_counter() - t)
    return state, float(np.median(times))


def measure(family: str, tasks: int, episodes: int = 40, repeats: int = 5) -> dict:
    cfg = from_flat({"env": f"meta:{family}", "inference": "cemrl", "agent": "dsac", "relabel": "hfr",
                     "train_tasks": tasks, "test_tasks": 5, "buffer_size": 100_000, "progress_bar": False,
                     "tensorboard": False, "inference.latent_dim": 2})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        state, h = trainer._fresh()
        for _ in range(episodes * cfg.episode_length):  # random-policy episodes, as in the warm-up
            tr, act_obs, starts = trainer._step_envs(h)
            state = trainer.learner.store(state, tr)
            state, pending = trainer.learner.act(state, act_obs, starts, True)
            h.pending = np.asarray(pending)
        learner = trainer.learner
        state, augment = timed(learner.relabel_episode, state, repeats)
        state, log_z = timed(lambda s: learner.relabel_upkeep(s)[0], state, repeats)
    hfr, inference = trainer.relabel, trainer.inference
    return {"family": family, "train_tasks": tasks, "episode_length": cfg.episode_length,
            "augment_ms": round(1e3 * augment, 2), "augment_ms_per_task": round(1e3 * augment / tasks, 3),
            "log_partition_ms": round(1e3 * log_z, 1), "utility_batch": hfr.utility_batch,
            "log_z_draws": hfr.log_z_draws, "context_size": inference.context_size}


def main() -> None:
    rows = [measure(family, tasks) for family, tasks in CASES]
    print(f"{'family':<20} {'tasks':>5} {'L':>4} {'augment ms/trajectory':>22} {'per task':>9} {'log Z ms':>9}")
    for r in rows:
        print(f"{r['family']:<20} {r['train_tasks']:>5} {r['episode_length']:>4} {r['augment_ms']:>22} "
              f"{r['augment_ms_per_task']:>9} {r['log_partition_ms']:>9}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"device": jax.devices()[0].device_kind, "rows": rows}, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
