"""PEARL throughput on this machine: meta-updates per second and end-to-end env steps.

Measures, each as the median of several timed repetitions:

1. PEARL meta-updates per second (SAC + encoder, one compiled call of 1 or 16 updates),
   with a filled multi-task replay on the device (100 train tasks), at the original's
   sizes (meta_batch 16, batch 256 per task, context 100, 3x300 networks, encoder 3x200,
   latent 5) and at a small size (meta_batch 4, batch 64, context 32, 2x64, encoder 1x64),
   and the share of this machine's float32 matmul rate (FLOPs from XLA's cost analysis;
   the rate as in ``throughput.py``: the best repetition, timed before and after).
2. End-to-end environment steps per second of the real loop on ``meta:cheetah-vel`` with
   PEARL at both sizes, with PEARL's ratio of 2 updates per 5 env steps (its 2000 updates
   per 5000 collected steps).

Prints a table and writes benchmarks/results/meta_throughput.json.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from replaylab.config import from_flat
from replaylab.training.learner import EpisodeStarts
from replaylab.training.loop import Trainer
from throughput import _timed, matmul_rate, parse_args, report

SIZES = {
    "original": {"meta_batch": 16, "batch_size": 256, "inference.context_size": 100,
                 "agent.hidden_sizes": [300, 300, 300], "inference.encoder_sizes": [200, 200, 200]},
    "small": {"meta_batch": 4, "batch_size": 64, "inference.context_size": 32, "agent.hidden_sizes": [64, 64],
              "inference.encoder_sizes": [64]},
}


def _config(size: str, **extra):
    return from_flat({"env": "meta:cheetah-vel", "inference": "pearl", "tensorboard": False, "progress_bar": False,
                      "checkpoint_interval": 0, "buffer_size": 100_000, **SIZES[size], **extra})


def filled_trainer(size: str, rr: int, d: str) -> tuple[Trainer, object]:
    """A trainer whose replay holds 100k random rows, an equal share per train task."""
    trainer = Trainer(_config(size, replay_ratio=rr), Path(d))
    state = trainer.learner.init([0])
    cap, T = trainer.cfg.buffer_size, trainer.cfg.train_tasks
    per = cap // T
    rng = np.random.default_rng(0)
    fill = lambda x: jnp.asarray(rng.normal(size=x.shape).astype(x.dtype)) if x.dtype == jnp.float32 else x
    data = jax.tree.map(fill, state.storage.data)
    data = data.replace(extra={**data.extra, "task": jnp.minimum(jnp.arange(cap) // per, T - 1)[None].astype(jnp.int32)})
    idx = state.tasks
    idx = idx.replace(start=idx.start.at[0, :, 0].set(jnp.arange(T) * per), length=idx.length.at[0, :, 0].set(per),
                      ctx=idx.ctx.at[0, :, 0].set(per), opened=jnp.ones_like(idx.opened),
                      adds=jnp.full_like(idx.adds, cap))
    state = state.replace(storage=state.storage.replace(data=data, size=jnp.full((1,), cap, jnp.int32)), tasks=idx)
    return trainer, state


def meta_updates(size: str, rr: int, seconds: float, reps: int) -> tuple[list[float], float]:
    """Meta-updates/s and the FLOPs of the compiled call. XLA's cost analysis counts a
    loop's body once, so at any ``rr`` this is about one meta-update's FLOPs (plus the
    action); the shares below use the RR 1 figure for every ``rr``, as ``throughput.py``."""
    with tempfile.TemporaryDirectory() as d:
        trainer, state = filled_trainer(size, rr, d)
        obs = np.zeros((1, trainer.envs[0].obs_dim), np.float32)
        starts = EpisodeStarts.none(1)
        update = trainer.learner.update
        cost = update.lower(state, obs, np.int32(0), starts).compile().cost_analysis()
        flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
        box = {"state": state, "step": 0}

        def call():
            box["state"], action, _ = update(box["state"], obs, np.int32(box["step"]), starts)
            np.asarray(action)
            box["step"] += rr
            return rr

        for _ in range(2):
            call()
        return _timed(call, seconds, reps), flops


def end_to_end_sps(size: str, steps: int) -> float:
    """Env steps per second of the real loop after the warm-up (updates 2 per 5 steps)."""
    warmup = 2000
    cfg = _config(size, replay_ratio=2, update_every=5, total_steps=warmup + steps, warmup_steps=warmup,
                  eval_interval=10**9, adapt_episodes=1, test_tasks=1, eval_train_tasks=0)
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(cfg, Path(d))
        marks = {"n": 0}
        orig_train, orig_act = trainer.learner.train, trainer.learner.act

        def timed(fn):
            def call(state, *a):
                out = fn(state, *a)
                np.asarray(out[1])
                marks["n"] += 1
                if marks["n"] == warmup + 50:  # compile and 50 steps excluded
                    marks["t0"] = time.perf_counter()
                marks["t_last"] = time.perf_counter()  # the final evaluation stays outside
                return out
            return call

        trainer.learner.train, trainer.learner.act = timed(orig_train), timed(orig_act)
        trainer.run()
    return (marks["n"] - warmup - 50) / (marks["t_last"] - marks["t0"])


def main() -> None:
    a, results = parse_args(__doc__, "meta_throughput.json")
    rows = []
    gflops = matmul_rate(a.seconds, a.reps)
    for size in SIZES:
        flops = None
        for rr in (1, 16):
            r, call_flops = meta_updates(size, rr, a.seconds, a.reps)
            flops = flops or call_flops  # one meta-update's FLOPs, from the RR 1 call
            results[f"meta_updates_per_s/{size}_rr{rr}"] = r
            results[f"meta_update_mflop/{size}"] = flops / 1e6
            rows.append((f"PEARL {size} size, {rr} per call (meta-updates/s)", statistics.median(r), flops))
    gflops += matmul_rate(a.seconds, a.reps)
    peak = max(gflops)
    results["matmul_gflops"] = gflops
    table = [("XLA f32 matmul 256x256, best rep (GFLOP/s)", peak, "")]
    for name, value, flops in rows:
        table.append((name, value, f"{value * flops / 1e9 / peak:.0%} of the matmul rate, "
                                   f"{flops / 1e6:.0f} MFLOP per meta-update"))
    for size in SIZES:
        sps = end_to_end_sps(size, a.e2e_steps)
        results[f"env_steps_per_s/cheetah-vel_{size}"] = sps
        table.append((f"meta:cheetah-vel end to end, PEARL {size} size (env steps/s)", sps, "2 updates per 5 steps"))
    report(table, results, a.out)


if __name__ == "__main__":
    main()
