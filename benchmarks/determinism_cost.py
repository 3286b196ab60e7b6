"""What the bit-identical vmapped seeds cost in the SAC update, A/B in fresh processes.

replaylab computes bias gradients and batch means as dot products (XLA sums a reduction
in another order once a seed axis is vmapped, a dot the same way). This times the SAC
update at RR 32 (``throughput.py``'s measurement) as is, and with either or both replaced
by plain XLA ops, in interleaved rounds, and prints the medians per round.

    python benchmarks/determinism_cost.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("as is", "plain bias add", "plain mean", "both plain")

PROBE = """
import json, statistics, sys
sys.path[:0] = [{root!r}, {here!r}]
import jax.numpy as jnp
import throughput
from replaylab.agents import networks, sac
variant = {variant!r}
if variant in ("plain bias add", "both plain"):
    networks._add_bias = lambda x, b: x + b
if variant in ("plain mean", "both plain"):
    sac.batch_mean = lambda x, w=None: jnp.mean(x if w is None else x * w)
print("RESULT" + json.dumps(statistics.median(throughput.replaylab_updates(1, 32, {seconds}, {reps}))))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(a.rounds):
        for v in VARIANTS:
            code = PROBE.format(root=str(HERE.parent), here=str(HERE), variant=v, seconds=a.seconds, reps=a.reps)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE.parent)
            line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
            results[v].append(json.loads(line[len("RESULT"):]))
    print(f"{'SAC update, RR 32':<18} updates/s per round")
    for v, r in results.items():
        print(f"{v:<18} {', '.join(f'{x:.1f}' for x in r)}")


if __name__ == "__main__":
    main()
