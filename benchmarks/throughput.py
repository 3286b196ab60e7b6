"""Throughput of replaylab's SAC on this machine, side by side in one run.

Measures, each as the median of several timed repetitions:

1. SAC gradient updates per second at batch 256, 2x256 networks, obs 17, act 6, with the
   replay storage (100k rows) on the device: RR 1 (one compiled call per update) and RR 32
   (32 updates fused in one call); Stable-Baselines3 and sbx on the same sizes when the
   ``bench`` extra is installed (``pip install torch==2.13.0`` first, then ``.[bench]``),
   also with 1 and 32 gradient steps per ``train`` call (sbx fuses the steps of one call).
2. Aggregate seed-updates per second with 1, 5 and 10 vmapped seeds (RR 32).
3. This machine's XLA float32 matmul rate, and the SAC update's share of it (FLOPs from
   XLA's cost analysis).
4. End-to-end environment steps per second, SAC on HalfCheetah-v5, RR 1 and RR 8.

Prints a table and writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from replaylab.agents import make_agent
from replaylab.agents.config import AgentConfig
from replaylab.config import from_flat
from replaylab.replay.methods import make_sampler
from replaylab.replay.sampler import ReplaySpec
from replaylab.replay.storage import Transition
from replaylab.training.learner import EpisodeStarts, Learner

OBS, ACT, BATCH = 17, 6, 256


def _timed(fn, seconds: float, reps: int) -> list[float]:
    """Calls ``fn()`` (which returns a work count) repeatedly; work per second per rep."""
    out = []
    for _ in range(reps):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += fn()
        out.append(n / (time.perf_counter() - t0))
    return out


def _filled_learner(seeds: int, rr: int, capacity: int = 100_000):
    agent = make_agent("sac", OBS, ACT, AgentConfig(), 1)
    learner = Learner(agent, make_sampler("uniform", {}, ReplaySpec(OBS, ACT, capacity)), capacity=capacity, batch_size=BATCH, replay_ratio=rr)
    state = learner.init(list(range(seeds)))
    rng = np.random.default_rng(0)
    data = state.storage.data
    fill = lambda x: jnp.asarray(rng.normal(size=x.shape).astype(x.dtype)) if x.dtype == jnp.float32 else x
    state = state.replace(storage=state.storage.replace(
        data=jax.tree.map(fill, data), size=jnp.full((seeds,), capacity, jnp.int32)))
    tr = Transition(obs=np.zeros((seeds, OBS), np.float32), action=np.zeros((seeds, ACT), np.float32),
                    reward=np.zeros(seeds, np.float32), next_obs=np.zeros((seeds, OBS), np.float32),
                    terminated=np.zeros(seeds, bool), episode=np.zeros(seeds, np.int32), step=np.zeros(seeds, np.int32))
    return learner, state, tr


def replaylab_updates(seeds: int, rr: int, seconds: float, reps: int) -> list[float]:
    learner, state, tr = _filled_learner(seeds, rr)
    obs = np.zeros((seeds, OBS), np.float32)
    box = {"state": state, "step": 0}

    def call():
        box["state"], action, _ = learner.train(box["state"], tr, obs, np.int32(box["step"]))
        np.asarray(action)  # the loop reads the actions back every step
        box["step"] += rr
        return rr * seeds

    for _ in range(3):
        call()  # compile and warm up
    return _timed(call, seconds, reps)


def sac_update_flops() -> float:
    learner, state, tr = _filled_learner(1, 1)
    obs = np.zeros((1, OBS), np.float32)
    cost = learner.update.lower(state, obs, np.int32(0), EpisodeStarts.none(1)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def matmul_rate(seconds: float, reps: int) -> list[float]:
    """GFLOP/s of a chain of 256x256 float32 matmuls in one compiled call."""
    n, chain = 256, 64
    a = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(0), (n, n)))[0]  # orthogonal: norms stay put
    f = jax.jit(lambda x: jax.lax.fori_loop(0, chain, lambda i, y: y @ a, x))
    x = jnp.ones((n, n))
    f(x).block_until_ready()

    def call():
        f(x).block_until_ready()
        return 2 * n**3 * chain / 1e9

    return _timed(call, seconds, reps)


def sb3_updates(kind: str, steps: int, seconds: float, reps: int) -> list[float] | None:
    """SB3 or sbx SAC updates/s on a HalfCheetah-sized problem, gradient steps only,
    ``steps`` per ``train`` call (each call samples its batches from the host buffer)."""
    try:
        import gymnasium as gym

        if kind == "sb3":
            from stable_baselines3 import SAC
        else:
            from sbx import SAC
    except ImportError:
        return None
    env = gym.make("HalfCheetah-v5")
    model = SAC("MlpPolicy", env, learning_starts=0, batch_size=BATCH, buffer_size=100_000, seed=0,
                **({"device": "cpu"} if kind == "sb3" else {}))
    model.learn(total_timesteps=2_000, progress_bar=False)  # fill some replay, compile

    def call():
        model.train(gradient_steps=steps, batch_size=BATCH)
        return steps

    call()
    return _timed(call, seconds, reps)


def end_to_end_sps(rr: int, steps: int) -> float:
    """Environment steps per second of the real loop after the warm-up, one seed."""
    from replaylab.training.loop import Trainer
    import tempfile

    cfg = from_flat({"env": "HalfCheetah-v5", "replay_ratio": rr, "total_steps": 1000 + steps,
                     "warmup_steps": 1000, "eval_interval": 10**9, "eval_episodes": 1, "checkpoint_interval": 0,
                     "tensorboard": False, "progress_bar": False, "buffer_size": 100_000})
    with tempfile.TemporaryDirectory() as d:
        trainer = Trainer(cfg, Path(d))
        marks = {}
        orig = trainer.learner.train

        def train(*a):
            marks.setdefault("first", time.perf_counter())
            marks["n"] = marks.get("n", 0) + 1
            if marks["n"] == 51:  # compile + 50 steps of warm-up excluded
                marks["t0"] = time.perf_counter()
            out = orig(*a)
            np.asarray(out[1])
            marks["t_last"] = time.perf_counter()  # the final evaluation and checkpoint stay outside
            return out

        trainer.learner.train = train
        trainer.run()
    return (marks["n"] - 51) / (marks["t_last"] - marks["t0"])


def sb3_end_to_end(kind: str, rr: int, steps: int) -> float | None:
    try:
        import gymnasium as gym

        if kind == "sb3":
            from stable_baselines3 import SAC
        else:
            from sbx import SAC
    except ImportError:
        return None
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        def _on_step(self):
            if self.num_timesteps == 1050:
                self.t0 = time.perf_counter()
            return True

    model = SAC("MlpPolicy", gym.make("HalfCheetah-v5"), learning_starts=1000, gradient_steps=rr, train_freq=1,
                seed=0, **({"device": "cpu"} if kind == "sb3" else {}))
    clock = Clock()
    model.learn(total_timesteps=1000 + steps, callback=clock, progress_bar=False)
    return (steps - 50) / (time.perf_counter() - clock.t0)  # SB3's learn() ends with no evaluation


def parse_args(doc: str, out_name: str) -> tuple[argparse.Namespace, dict]:
    """The options every throughput benchmark takes, and its results dict to fill."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="length of one timed repetition")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement")
    p.add_argument("--e2e-steps", type=int, default=1000, help="timed environment steps end to end")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / out_name))
    a = p.parse_args()
    return a, {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
               "seconds": a.seconds, "reps": a.reps}


def report(rows: list[tuple], results: dict, out: str) -> None:
    """Print (measurement, value, note) rows as a table and write the results as JSON."""
    width = max(len(name) for name, _, _ in rows)
    print(f"\n{'measurement':<{width}} {'median':>10}  note")
    for name, value, note in rows:
        shown = "not installed" if value is None else f"{value:10.1f}"
        print(f"{name:<{width}} {shown:>10}  {note}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {path}")


def main() -> None:
    a, results = parse_args(__doc__, "throughput.json")
    med = lambda xs: None if xs is None else statistics.median(xs)
    rows = []

    # The machine's rate is the best of its repetitions (load only slows it down), timed
    # both before and after the update measurements; shares below are of that peak.
    gflops = matmul_rate(a.seconds, a.reps)
    flops = sac_update_flops()
    results["sac_update_mflop"] = flops / 1e6

    for name, fn in [("replaylab RR 1", lambda: replaylab_updates(1, 1, a.seconds, a.reps)),
                     ("replaylab RR 32 fused", lambda: replaylab_updates(1, 32, a.seconds, a.reps)),
                     ("SB3 SAC, 1 step per call", lambda: sb3_updates("sb3", 1, a.seconds, a.reps)),
                     ("SB3 SAC, 32 steps per call", lambda: sb3_updates("sb3", 32, a.seconds, a.reps)),
                     ("sbx SAC, 1 step per call", lambda: sb3_updates("sbx", 1, a.seconds, a.reps)),
                     ("sbx SAC, 32 steps per call", lambda: sb3_updates("sbx", 32, a.seconds, a.reps))]:
        r = fn()
        results[f"updates_per_s/{name}"] = r
        rows.append((f"{name} (updates/s)", med(r), r))
    gflops += matmul_rate(a.seconds, a.reps)
    results["matmul_gflops"] = gflops
    peak = max(gflops)
    rows = [("XLA f32 matmul 256x256, best rep (GFLOP/s)", peak, "")] + [
        (name, value, "" if r is None else f"{value * flops / 1e9 / peak:.0%} of the matmul rate")
        for name, value, r in rows]

    for seeds in (1, 5, 10):
        r = replaylab_updates(seeds, 32, a.seconds, a.reps)
        results[f"seed_updates_per_s/{seeds}_seeds"] = r
        rows.append((f"replaylab {seeds} vmapped seeds, RR 32 (seed-updates/s)", med(r), ""))

    for rr in (1, 8):
        for kind in ("replaylab", "sb3", "sbx"):
            r = end_to_end_sps(rr, a.e2e_steps) if kind == "replaylab" else sb3_end_to_end(kind, rr, a.e2e_steps)
            results[f"env_steps_per_s/{kind}_rr{rr}"] = r
            rows.append((f"HalfCheetah-v5 end to end, {kind}, RR {rr} (env steps/s)", r, ""))

    report(rows, results, a.out)


if __name__ == "__main__":
    main()
