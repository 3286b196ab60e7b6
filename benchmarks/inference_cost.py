"""What decoupled task inference costs on this machine, on ``meta:cheetah-vel``.

Measures, each as the median of several timed repetitions, with the originals' sizes
(CEMRL: T = 10, latent 1, K = 1, hidden = 10 x input, 256 windows per step; SMRL: the
MuJoCo config, context 50, GRU 64 x 4, decoder 16 x 3, 32 latent samples, 'mean_var'):

1. CEMRL's encoder phase: milliseconds per encoder step, and per 1k collected transitions
   at the original's ratio (a phase of ``encoder_steps`` = 5000 per 4000 env steps, the
   early-stopping cap, i.e. the most it costs).
2. CEMRL's relabelling per 1k stored transitions, ours (one encoder pass per row, the
   windows summed from per-row factors) against re-encoding every row's window as the
   original did (T encoder passes per row), on a 100k-row buffer.
3. SMRL's ELBO step (the encoder's training, once per agent update) in milliseconds.
4. End-to-end environment steps per second of the real loop with each method (1 update
   per step after a 1000-step warm-up; CEMRL with a phase of 200 encoder steps every 1000
   env steps, so the phase share is visible; timings per part from progress.csv).

Prints a table and writes benchmarks/results/inference_cost.json.
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from replaylab.config import from_flat
from replaylab.inference import INFERENCES, InferenceSpec
from replaylab.replay import storage as replay_storage
from replaylab.replay.tasks import window_context
from replaylab.training.loop import Trainer
from throughput import _timed, parse_args, report

OBS, ACT = 20, 6  # meta:cheetah-vel
ROWS = 100_000
SMRL_MUJOCO = {"context_size": 50, "gru_hidden": 64, "gru_layers": 4, "decoder_sizes": (16, 16, 16),
               "encoding_mode": "mean_var"}


def filled_storage(rows: int = ROWS, episode_length: int = 200):
    """A buffer of ``rows`` random transitions in episodes of ``episode_length`` steps."""
    rng = np.random.default_rng(0)
    s = replay_storage.init(rows, OBS, ACT, {"z": ((1,), jnp.float32), "next_z": ((1,), jnp.float32)})
    i = np.arange(rows)
    data = s.data.replace(obs=jnp.asarray(rng.normal(size=(rows, OBS)), jnp.float32),
                          action=jnp.asarray(rng.uniform(-1, 1, (rows, ACT)), jnp.float32),
                          reward=jnp.asarray(rng.normal(size=rows), jnp.float32),
                          next_obs=jnp.asarray(rng.normal(size=(rows, OBS)), jnp.float32),
                          episode=jnp.asarray(i // episode_length, jnp.int32),
                          step=jnp.asarray(i % episode_length, jnp.int32))
    return s.replace(data=data, size=jnp.asarray(rows, jnp.int32))


def cemrl_costs(seconds: float, reps: int) -> dict:
    m = INFERENCES["cemrl"](InferenceSpec(OBS, ACT), encoder_steps=200, patience=10**6)
    storage = filled_storage()
    state = m.init(jax.random.PRNGKey(0))
    phase = jax.jit(m.encoder_phase)
    box = {"state": state, "i": 0}

    def run_phase():
        box["state"], metrics = phase(box["state"], storage, jax.random.PRNGKey(box["i"]))
        jax.block_until_ready(metrics)
        box["i"] += 1
        return m.encoder_steps

    run_phase()
    step_rate = _timed(run_phase, seconds, reps)  # encoder steps per second

    relabel = jax.jit(m.relabel, donate_argnums=1)
    sbox = {"storage": storage}

    def ours():
        sbox["storage"], _ = relabel(box["state"], sbox["storage"], m.belief_init())
        jax.block_until_ready(sbox["storage"].data.extra["z"])
        return ROWS / 1000

    def original():  # every row's window encoded on its own, in chunks of 4096 rows
        st = sbox["storage"]
        p = (box["state"].encoder.params, box["state"].stats)
        for start in range(0, ROWS, 4096):
            rows = jnp.arange(start, min(start + 4096, ROWS))
            z = naive(p, st, rows)
        jax.block_until_ready(z)
        return ROWS / 1000

    @jax.jit
    def naive(p, st, rows):
        window, mask = window_context(st, rows, m.context_size)
        return jax.vmap(lambda w, k: m.posterior(p, w, k)[0])(window.replace(extra={}), mask)

    ours(), original()
    return {"encoder_steps_per_s": step_rate, "relabel_k_rows_per_s": _timed(ours, seconds, reps),
            "relabel_original_k_rows_per_s": _timed(original, seconds, reps)}


def smrl_elbo_rate(seconds: float, reps: int) -> list[float]:
    """ELBO steps per second at SMRL's MuJoCo sizes on a batch of 256 windows."""
    cfg = from_flat({"env": "meta:cheetah-vel", "inference": "smrl", "batch_size": 256, "meta_batch": 16,
                     **{f"inference.{k}": list(v) if isinstance(v, tuple) else v for k, v in SMRL_MUJOCO.items()},
                     "tensorboard": False, "progress_bar": False, "buffer_size": ROWS})
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(cfg, Path(d))
    m = trainer.inference
    storage = filled_storage()
    rows = jax.random.randint(jax.random.PRNGKey(1), (256,), 0, ROWS)
    window, mask = window_context(storage, rows, m.context_size)
    from replaylab.replay.tasks import Batch

    batch = Batch(data=jax.tree.map(lambda x: x[rows], storage.data), weights=jnp.ones(256), rows=rows,
                  tasks=jnp.zeros(16, jnp.int32), context=window, context_mask=mask)
    state = m.init(jax.random.PRNGKey(0))

    @jax.jit
    def step(state, key):
        _, aux = m.condition(state, batch, key)
        return m.update(state, aux, None)

    box = {"state": state, "i": 0}

    def call():
        box["state"], metrics = step(box["state"], jax.random.PRNGKey(box["i"]))
        jax.block_until_ready(metrics)
        box["i"] += 1
        return 1

    call()
    return _timed(call, seconds, reps)


def end_to_end(method: str, steps: int) -> dict:
    extra = {"inference.every": 1000, "inference.encoder_steps": 200, "inference.patience": 10**6} \
        if method == "cemrl" else {f"inference.{k}": list(v) if isinstance(v, tuple) else v
                                   for k, v in SMRL_MUJOCO.items()} if method == "smrl" else {}
    warmup = 1000
    cfg = from_flat({"env": "meta:cheetah-vel", "inference": method, "batch_size": 256, "meta_batch": 16,
                     "total_steps": warmup + steps, "warmup_steps": warmup, "eval_interval": warmup + steps,
                     "adapt_episodes": 1, "test_tasks": 1, "eval_train_tasks": 0, "checkpoint_interval": 0,
                     "buffer_size": 100_000, "tensorboard": False, "progress_bar": False, **extra})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        Trainer(cfg, Path(d)).run()
        wall = time.perf_counter() - t0
        with open(Path(d) / "progress.csv") as f:
            row = list(csv.DictReader(f))[-1]
    parts = {k: float(v) for k, v in row.items() if k.startswith("time_") and v}
    return {"env_steps_per_s_with_compile": (warmup + steps) / wall, **parts}


def main() -> None:
    a, results = parse_args(__doc__, "inference_cost.json")
    table = []
    c = cemrl_costs(a.seconds, a.reps)
    results.update({f"cemrl/{k}": v for k, v in c.items()})
    step_ms = 1000 / statistics.median(c["encoder_steps_per_s"])
    table.append(("CEMRL encoder step, 256 windows of 10 (ms)", step_ms,
                  f"computed: a 5000-step phase per 4000 env steps = {5000 * step_ms / 4:.0f} ms per 1k env steps"))
    ours = 1000 / statistics.median(c["relabel_k_rows_per_s"])
    orig = 1000 / statistics.median(c["relabel_original_k_rows_per_s"])
    table.append(("CEMRL relabelling, ours (ms per 1k stored rows)", ours, "one encoder pass per row"))
    table.append(("CEMRL relabelling, re-encoding each window (ms per 1k rows)", orig,
                  f"the original's way: {orig / ours:.1f}x ours"))
    r = smrl_elbo_rate(a.seconds, a.reps)
    results["smrl/elbo_steps_per_s"] = r
    table.append(("SMRL condition + ELBO step, 256 rows, context 50 (ms)", 1000 / statistics.median(r),
                  "once per agent update"))
    for method in ("none", "cemrl", "smrl"):
        e = end_to_end(method, a.e2e_steps)
        results[f"e2e/{method}"] = e
        parts = ", ".join(f"{k[5:]} {v:.1f} s" for k, v in e.items() if k.startswith("time_"))
        table.append((f"meta:cheetah-vel end to end, inference={method} (env steps/s)",
                      e["env_steps_per_s_with_compile"], parts))
    report(table, results, a.out)


if __name__ == "__main__":
    main()
