"""Cost of every replay method per SAC update, against uniform, side by side in one run.

HalfCheetah dimensions (obs 17, act 6), batch 256, 2x256 networks, one seed; buffers of
100k and 1M rows filled with real HalfCheetah-v5 transitions (random actions; beyond the
first 100k the data is repeated with 1% jitter). For each method, buffer size and replay
ratio RR it times the per-env-step compiled call (add one transition, RR updates) and
one index upkeep (``refresh``: NMER's neighbour-table rebuild, LCER's k-means refit; the
faster of two timed calls after the compiling one), and
reports the time per update with the upkeep amortised over its interval:

    per_update = (step_time + refresh_time / refresh_interval) / RR

For NMER it also measures the neighbour table's recall@k against brute force on 200
random rows. Prints a table and writes benchmarks/results/augment_overhead.json.

``her`` is uniform replay with HER (``her=future``, k = 4) on the same data read as a goal
task: the last 3 observation entries are the goal, the first 3 of s' the achieved goal
(a stored column), Fetch's sparse reward, HalfCheetah's 1000-step episodes (the binary
search for an episode's extent takes 10 steps here, 6 for Fetch's 50).

``mbpo`` is uniform replay with ``model=mbpo`` at its defaults (7 x 4 x 200 ensemble,
100k rollouts every 250 steps, 5% real rows). Its upkeep (fit, then roll out) is timed in
parts on the same buffer: the fixed work, one training epoch over the buffer and one
rollout step, from fits cut at 1 and 2 epochs and rollouts of 1 and 2 steps (medians of
3 timed calls each, after the compiling one). A fit runs
until 5 epochs pass without a 1% holdout gain, so it takes at least 6 epochs; the upkeep is
amortised as base + 6 epochs + k steps over 250 env steps, at k = 1 (MBPO's first 20k
steps) and k = 15 (its longest rollouts; ``per_update_ms_k15``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import platform
import statistics
import time
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from replaylab.agents import make_agent
from replaylab.config import AgentConfig
from replaylab.envs.termination import NEVER
from replaylab.envs.goal import GoalSpec, distance_reward
from replaylab.models import ModelSpec, make_model
from replaylab.models.mbpo import training_data
from replaylab.replay import clusters as cl
from replaylab.replay.her import Future
from replaylab.replay.methods import SAMPLERS, make_sampler
from replaylab.replay.per import PER
from replaylab.replay.sampler import ReplaySpec
from replaylab.replay.storage import Transition
from replaylab.training.learner import Learner

OBS, ACT, BATCH = 17, 6, 256


def halfcheetah_data(n: int, real: int = 100_000) -> dict[str, np.ndarray]:
    env = gym.make("HalfCheetah-v5")
    rng = np.random.default_rng(0)
    m = min(n, real)
    out = {"obs": np.empty((m, OBS), np.float32), "action": np.empty((m, ACT), np.float32),
           "reward": np.empty(m, np.float32), "next_obs": np.empty((m, OBS), np.float32),
           "episode": np.empty(m, np.int32), "step": np.empty(m, np.int32)}
    obs, _ = env.reset(seed=0)
    ep, t = 0, 0
    for i in range(m):
        a = rng.uniform(-1, 1, ACT).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        for k, v in (("obs", obs), ("action", a), ("reward", r), ("next_obs", nxt), ("episode", ep), ("step", t)):
            out[k][i] = v
        obs, t = nxt, t + 1
        if term or trunc:
            obs, _ = env.reset(seed=ep + 1)
            ep, t = ep + 1, 0
    if n > m:
        reps = -(-n // m)
        for k in out:
            x = np.concatenate([out[k]] * reps)[:n]
            if x.dtype == np.float32:
                x = x * (1 + 0.01 * rng.standard_normal(x.shape).astype(np.float32))
            out[k] = x
    return out


def filled_state(learner: Learner, sampler, data: dict, n: int):
    state = learner.init([0])
    put = {k: jnp.asarray(v[None]) for k, v in data.items()}
    d = state.storage.data
    d = d.replace(obs=put["obs"], action=put["action"], reward=put["reward"], next_obs=put["next_obs"],
                  episode=put["episode"], step=put["step"])
    if "achieved_goal" in d.extra:
        d = d.replace(extra={"achieved_goal": put["next_obs"][..., :3]})
    state = state.replace(storage=state.storage.replace(data=d, size=jnp.full((1,), n, jnp.int32)))
    if isinstance(sampler, PER):  # the stored rows need priorities
        state = state.replace(sampler=jax.jit(jax.vmap(lambda s: sampler.update(
            s, jnp.arange(n), jnp.ones((n,))))) (state.sampler))
    return state


class Case:
    """One method's learner on a filled buffer, its upkeep timed once."""

    def __init__(self, method: str, n: int, rr: int, data: dict, params: dict | None = None):
        agent = make_agent("sac", OBS, ACT, AgentConfig(), 1)
        her, mbpo = method == "her", method == "mbpo"
        self.sampler = make_sampler("uniform" if her or mbpo else method, params or {},
                                    ReplaySpec(OBS, ACT, n, NEVER))
        hindsight = Future(goal=GoalSpec(3, distance_reward(0.05, True), 1000)) if her else None
        model = make_model("mbpo", {}, ModelSpec(OBS, ACT, NEVER)) if mbpo else None
        self.learner = Learner(agent, self.sampler, capacity=n, batch_size=BATCH,
                               replay_ratio=rr, hindsight=hindsight, model=model,
                               columns={"achieved_goal": ((3,), jnp.float32)} if her else None)
        self.state = filled_state(self.learner, self.sampler, data, n)
        self.row = {"method": method, **(params or {}), "buffer": n, "rr": rr, "refresh_s": 0.0,
                    "refresh_interval": self.sampler.refresh_interval, "step_ms_reps": []}
        if self.sampler.refresh_interval:
            times = []
            for _ in range(3):  # the first call compiles
                t0 = time.perf_counter()
                self.state = self.learner.refresh(self.state)
                jax.block_until_ready(self.state)
                times.append(time.perf_counter() - t0)
            self.row["refresh_s"] = min(times[1:])
            self.row["rebuilds"] = len(times)
            if method == "nmer":  # before the timed steps, which write the same row over and over
                self.row.update(nmer_recall(self.state, self.sampler, n))
        if mbpo:
            self.row.update(time_model_upkeep(self, model, agent))
        i = np.arange(1)
        self.tr = Transition(obs=data["obs"][i], action=data["action"][i], reward=data["reward"][i],
                             next_obs=data["next_obs"][i], terminated=np.zeros(1, bool),
                             episode=np.zeros(1, np.int32), step=np.zeros(1, np.int32),
                             extra={"achieved_goal": data["next_obs"][i, :3]} if her else {})
        self.obs = data["obs"][i]
        for _ in range(3):
            self.call()

    def call(self):
        self.state, a, _ = self.learner.train(self.state, self.tr, self.obs, np.int32(0))
        np.asarray(a)  # the loop reads the action back every step

    def time_steps(self, seconds: float) -> float:
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.call()
            calls += 1
        return (time.perf_counter() - t0) / calls * 1e3


def time_model_upkeep(case: Case, model, agent) -> dict:
    """MBPO's upkeep in parts (see the module docstring); leaves the model buffer filled
    by a rollout, so the timed steps mix real model rows."""
    one = jax.tree.map(lambda x: x[0], case.state)
    x, y = training_data(one.storage)
    fits = {e: jax.jit(dataclasses.replace(model, max_epochs=e).models.fit) for e in (1, 2)}
    roll = jax.jit(lambda ens, buf, obs, length, key, agent_state: model.rollout(
        ens, buf, obs, length, key, functools.partial(agent.explore, agent_state)), donate_argnums=1)
    starts = one.storage.data.obs[:model.rollout_batch]

    def timed(fn, *args, reps: int = 3):  # the first call compiles; the median of the next reps
        out, times = jax.block_until_ready(fn(*args)), []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), out

    key = jax.random.PRNGKey(0)
    fit1, ens = timed(fits[1], one.model.ensemble, x, y, one.storage.size, key)
    fit2, _ = timed(fits[2], one.model.ensemble, x, y, one.storage.size, key)
    buf, rolls = one.model.buffer, {}
    for length in (1, 2) * 4:  # the model buffer is donated, as in the learner: no copy
        t0 = time.perf_counter()
        buf, _ = jax.block_until_ready(roll(ens, buf, starts, length, key, one.agent))
        rolls.setdefault(length, []).append(time.perf_counter() - t0)
    roll1, roll2 = (float(np.median(rolls[k][1:])) for k in (1, 2))  # each length's first call compiles
    epoch, step = fit2 - fit1, roll2 - roll1
    base = fit1 - epoch + roll1 - step
    upkeep = base + 6 * epoch + step
    filled = one.model.replace(ensemble=ens, buffer=buf, window=buf.size)
    case.state = case.state.replace(model=jax.tree.map(lambda v: v[None], filled))
    return {"refresh_interval": model.train_every, "refresh_s": upkeep, "fit_epoch_s": epoch, "rollout_step_s": step, "upkeep_base_s": base,
            "upkeep_k15_s": upkeep + 14 * step}


def per_update_ms(row: dict, step_ms: float) -> float:
    amort = row["refresh_s"] * 1e3 / row["refresh_interval"] if row["refresh_interval"] else 0.0
    return (step_ms + amort) / row["rr"]


def measure_all(methods: list[str], n: int, rr: int, data: dict, seconds: float, rounds: int,
                params: list[dict] | None = None) -> list[dict]:
    """Interleaved: in each round every method is timed once, so a change in the machine's
    load hits all of them alike; a method's ratio to uniform is the median over rounds."""
    cases = [Case(m, n, rr, data, p) for m, p in zip(methods, params or [None] * len(methods))]
    for _ in range(rounds):
        for c in cases:
            c.row["step_ms_reps"].append(c.time_steps(seconds))
    base = cases[methods.index("uniform")].row["step_ms_reps"] if "uniform" in methods else None
    rows = []
    for c in cases:
        r = c.row
        r["step_ms"] = statistics.median(r["step_ms_reps"])
        r["per_update_ms"] = per_update_ms(r, r["step_ms"])
        if "upkeep_k15_s" in r:
            r["per_update_ms_k15"] = per_update_ms({**r, "refresh_s": r["upkeep_k15_s"]}, r["step_ms"])
        if base:
            r["vs_uniform"] = statistics.median(
                per_update_ms(r, m) / per_update_ms(cases[methods.index("uniform")].row, u)
                for m, u in zip(r["step_ms_reps"], base))
        rows.append(r)
    return rows


def nmer_recall(state, sampler, n: int, queries: int = 200) -> dict:
    """recall@k of the neighbour table, and the mean distance of the listed neighbours
    over that of the exact k nearest (1.0 is exact; random partners give the last ratio)."""
    s = jax.tree.map(lambda x: x[0], state)
    c = s.sampler.clusters
    z = np.asarray(cl.normalise(c, cl.features(s.storage)))[:n]
    rows = np.random.default_rng(1).choice(n, queries, replace=False)
    hits, ratio, rand = 0, [], []
    for r in rows:
        d = np.sqrt(((z - z[r]) ** 2).sum(1))
        d[r] = np.inf
        true = np.argpartition(d, sampler.k)[: sampler.k]
        found = np.asarray(s.sampler.nbrs[r])
        hits += len(set(true.tolist()) & set(found.tolist()))
        ratio.append(d[found].mean() / d[true].mean())
        rand.append(d[np.isfinite(d)].mean() / d[true].mean())
    return {"recall": hits / (queries * sampler.k), "dist_ratio": float(np.median(ratio)),
            "random_dist_ratio": float(np.median(rand))}


NMER_INDEX = [(2048, 1), (2048, 2), (4096, 2), (4096, 4), (8192, 4), (8192, 8)]


def nmer_index_sweep(n: int, data: dict, seconds: float, rounds: int) -> list[dict]:
    """What NMER's ``window`` and ``probes`` buy: recall and distance against cost, RR 1."""
    methods = ["uniform"] + ["nmer"] * len(NMER_INDEX)
    params = [None] + [{"window": w, "probes": p} for w, p in NMER_INDEX]
    return measure_all(methods, n, 1, data, seconds, rounds, params)


def nmer_recall_by_rebuild(n: int, data: dict, rebuilds: int = 6) -> list[dict]:
    """Recall of NMER's default lists after each of ``rebuilds`` rebuilds on the same rows:
    each rebuild also searches the previous lists and the neighbours' lists."""
    sampler = make_sampler("nmer", {}, ReplaySpec(OBS, ACT, n, NEVER))
    learner = Learner(make_agent("sac", OBS, ACT, AgentConfig(), 1), sampler, capacity=n, batch_size=BATCH,
                      replay_ratio=1)
    state = filled_state(learner, sampler, data, n)
    out = []
    for i in range(rebuilds):
        state = learner.refresh(state)
        out.append({"rebuilds": i + 1, **nmer_recall(state, sampler, n)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--rrs", default="1,20")
    p.add_argument("--methods", default=",".join(SAMPLERS), help="replay methods, 'her' (uniform + HER) and 'mbpo' (uniform + model=mbpo)")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per method and round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; ratios are medians over them")
    p.add_argument("--nmer-index", type=int, default=0, metavar="ROWS",
                   help="instead: NMER's recall and cost for several window/probes settings at ROWS rows")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "augment_overhead.json"))
    args = p.parse_args()
    if args.nmer_index:
        data = halfcheetah_data(args.nmer_index)
        rows = nmer_index_sweep(args.nmer_index, data, args.seconds, args.rounds)
        for r in rows:
            print(f"{r['method']:<8} window {r.get('window', '-'):>5} probes {r.get('probes', '-'):>2}  "
                  f"step {r['step_ms']:6.2f} ms  refresh {r['refresh_s']:6.2f} s  per update {r['per_update_ms']:5.2f} ms  "
                  f"{r['vs_uniform']:.2f}x" + (f"  recall@k {r['recall']:.3f}, distance {r['dist_ratio']:.3f}x exact"
                                               if "recall" in r else ""), flush=True)
        by_rebuild = nmer_recall_by_rebuild(args.nmer_index, data)
        for r in by_rebuild:
            print(f"default lists after {r['rebuilds']} rebuilds: recall@k {r['recall']:.3f}, "
                  f"distance {r['dist_ratio']:.3f}x exact", flush=True)
        write_json(Path(args.out), rows, by_rebuild=by_rebuild)
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    rrs = [int(x) for x in args.rrs.split(",")]
    methods = args.methods.split(",")
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        data = halfcheetah_data(n)
        print(f"# {n} rows of HalfCheetah data in {time.perf_counter() - t0:.1f} s", flush=True)
        for rr in rrs:
            for r in measure_all(methods, n, rr, data, args.seconds, args.rounds):
                rows.append(r)
                rec = (f"  recall@k {r['recall']:.3f}, distance {r['dist_ratio']:.3f}x exact "
                       f"(random {r['random_dist_ratio']:.2f}x)") if "recall" in r else ""
                ratio = f"{r['vs_uniform']:.2f}x" if r.get("vs_uniform") else "-"
                print(f"{n:>8} RR{rr:<3} {r['method']:<9} step {r['step_ms']:8.2f} ms  refresh {r['refresh_s']:6.2f} s "
                      f"every {r['refresh_interval']:>5}  per update {r['per_update_ms']:6.2f} ms  {ratio}{rec}"
                      + (f"  (k=15: {r['per_update_ms_k15']:.2f} ms)" if "per_update_ms_k15" in r else ""),
                      flush=True)
    write_json(Path(args.out), rows)


def write_json(out: Path, rows: list[dict], **extra) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
                               "rows": rows, **extra}, indent=1))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
