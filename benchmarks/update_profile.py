"""Where the SAC update's time goes on this CPU: an XLA profile, and the matmul layouts.

1. The compiled update (batch 256, 2x256, 32 updates per call, as in throughput.py) under
   ``jax.profiler``: time per XLA op, summed over the calls, the largest first, with each
   op's HLO (dots and fusions carry their shapes and contracting dimensions). The trace
   covers the loop's whole call (store one transition, then update); ops are named from the
   update's HLO, so a store op of the same name would be counted with it (the store is a
   handful of row writes).
2. One 256x256x256 float32 product in the three layouts a dense layer's forward and
   backward passes use: x @ W (forward), g @ W^T (input gradient) and x^T @ g (weight
   gradient, contracting over the batch), plain and vmapped over a pair (the twin critics),
   in GFLOP/s, with whether XLA compiled it to a YNNPACK fusion.

    python benchmarks/update_profile.py [--calls 20] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import throughput as T  # noqa: E402

RR = 32


def profile(calls: int, top: int) -> list[dict]:
    """The ``top`` XLA ops by total time in ``calls`` traced calls."""
    learner, state, tr = T._filled_learner(1, RR)
    obs = np.zeros((1, T.OBS), np.float32)
    box = {"state": state}

    def call(i):
        box["state"], action, _ = learner.train(box["state"], tr, obs, np.int32(i * RR))
        np.asarray(action)

    for i in range(5):
        call(i)  # compile and warm up
    hlo = learner.update.lower(state, obs, np.int32(0), T.EpisodeStarts.none(1)).compile().as_text()
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for i in range(calls):
            call(i)
        jax.profiler.stop_trace()
        path = sorted(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))[-1]
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and re.fullmatch(r"[\w.\-]+", e["name"]) and f"%{e['name']} = " in hlo:
            total[e["name"]] += e.get("dur", 0)
            count[e["name"]] += 1
    updates = calls * RR
    rows = []
    for name, us in total.most_common(top):
        line = re.search(rf"%{re.escape(name)} = ([^\n]*?)(?:, metadata=|\n)", hlo).group(1)
        rows.append({"op": name, "us_per_update": us / updates, "share": us / sum(total.values()), "hlo": line[:160]})
    return rows


def layouts(reps: int = 7, chain: int = 64) -> list[dict]:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x, g = (jax.random.normal(k, (256, 256)) for k in keys[:2])
    w = jax.random.normal(keys[2], (256, 256)) / 16
    forms = {"x @ W (forward)": (lambda a, b: a @ b, x, w),
             "g @ W^T (input gradient)": (lambda a, b: a @ b.T, g, w),
             "x^T @ g (weight gradient)": (lambda a, b: a.T @ b, x, g)}
    out = []
    for pair in (False, True):
        for name, (f, a, b) in forms.items():
            if pair:
                f, a, b = jax.vmap(f), jnp.stack([a, a]), jnp.stack([b, b])
            run = jax.jit(lambda a, b, f=f: jax.lax.fori_loop(0, chain, lambda i, acc: acc + f(a + 1e-9 * acc, b),
                                                              jnp.zeros_like(f(a, b))))
            run(a, b).block_until_ready()
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                run(a, b).block_until_ready()
                best = min(best, time.perf_counter() - t0)
            flops = 2 * 256**3 * chain * (2 if pair else 1)
            ynn = "__ynn_fusion" in run.lower(a, b).compile().as_text()
            out.append({"layout": name + (", vmapped pair" if pair else ""), "gflops": flops / best / 1e9, "ynnpack": ynn})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", default="benchmarks/results/update_profile.json")
    a = p.parse_args()
    rate = statistics.median(T.replaylab_updates(1, RR, seconds=2.0, reps=3))  # untraced, as throughput.py
    ops = profile(a.calls, a.top)
    lay = layouts()
    print(f"SAC update, {RR} per call: {rate:.1f} updates/s untraced; XLA ops by time (traced):")
    print(f"{'op':28s} {'us/update':>10s} {'share':>6s}  hlo")
    for r in ops:
        print(f"{r['op']:28s} {r['us_per_update']:10.1f} {r['share']:6.1%}  {r['hlo']}")
    print(f"\n{'256^3 float32 product':44s} {'GFLOP/s':>8s}  YNNPACK")
    for r in lay:
        print(f"{r['layout']:44s} {r['gflops']:8.1f}  {r['ynnpack']}")
    Path(a.out).write_text(json.dumps({"updates_per_s": rate, "ops": ops, "layouts": lay,
                                       "jax": jax.__version__}, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
