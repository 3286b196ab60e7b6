"""The single-task SAC update of two replaylab versions and sbx, side by side in one run.

Each round times, one after the other in fresh processes: replaylab at git ref BEFORE,
this working tree (AFTER), sbx's SAC, and the XLA float32 matmul rate; RR 1 (one
update per call) and RR 32 (32 updates fused in one call), batch 256, 2x256 networks,
obs 17, act 6, 100k stored rows (``throughput.py``'s measurement). Rounds interleave the
versions, each round starting with the next one, so that a noisy phase of this shared
machine hits all of them alike; the table gives
medians over rounds, ratios and shares of the matmul bound (best matmul rep over the
run; FLOPs per update from XLA's cost analysis of each version's compiled update).

It also compares the two versions' compiled RR 1 update (XLA's optimised HLO, metadata
stripped): identical text means identical machine work.

    python benchmarks/before_after.py --before 7b9a999

Writes benchmarks/results/before_after.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
sys.path[:0] = [{tree!r}, {tree!r} + "/benchmarks"]
import numpy as np, throughput
what, seconds, reps = {what!r}, {seconds}, {reps}
out = {{}}
if what == "replaylab":
    for rr in (1, 32):
        out[f"rr{{rr}}"] = throughput.replaylab_updates(1, rr, seconds, reps)
    out["mflop"] = throughput.sac_update_flops() / 1e6
elif what == "sbx":
    for steps in (1, 32):
        out[f"rr{{steps}}"] = throughput.sb3_updates("sbx", steps, seconds, reps)
elif what == "matmul":
    out["gflops"] = throughput.matmul_rate(seconds, reps)
elif what == "hlo":
    learner, state, tr = throughput._filled_learner(1, 1)
    obs = np.zeros((1, throughput.OBS), np.float32)
    extra = (throughput.EpisodeStarts.none(1),) if hasattr(throughput, "EpisodeStarts") else ()
    out["hlo"] = learner.update.lower(state, obs, np.int32(0), *extra).compile().as_text()
print("RESULT" + json.dumps(out))
"""


def probe(tree: Path, what: str, seconds: float, reps: int) -> dict:
    code = PROBE.format(tree=str(tree), what=what, seconds=seconds, reps=reps)
    r = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise RuntimeError(f"{what} in {tree} failed:\n{r.stderr[-3000:]}")
    return json.loads(line[len("RESULT"):])


def hlo_digest(text: str) -> str:
    """The optimised HLO without debug information (source files, functions, stack frames,
    metadata), its instruction names renumbered in order of appearance."""
    text = re.sub(r", metadata=\{[^}]*\}|, stack_frame_id=\d+|origin=\{[^}]*\}", "", text)
    lines = [x for x in text.splitlines()
             if not re.match(r'^\d+ ["{]|(FileNames|FunctionNames|FileLocations|StackFrames)', x)]
    names: dict[str, str] = {}
    text = re.sub(r"%[\w.\-]+", lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), "\n".join(lines))
    text = re.sub(r"HloModule \S+", "HloModule m", text)
    return hashlib.sha256(text.encode()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="git ref of the version to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "before_after.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        before = Path(d) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), a.before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            runs: dict[str, list[dict]] = {"before": [], "after": [], "sbx": [], "matmul": []}
            same_hlo = hlo_digest(probe(before, "hlo", 0, 0)["hlo"]) == \
                hlo_digest(probe(ROOT, "hlo", 0, 0)["hlo"])
            probes = [("before", before, "replaylab"), ("after", ROOT, "replaylab"), ("sbx", ROOT, "sbx"),
                      ("matmul", ROOT, "matmul")]
            for i in range(a.rounds):
                for name, tree, what in probes[i % 4:] + probes[:i % 4]:  # each round starts with another
                    runs[name].append(probe(tree, what, a.seconds, a.reps))
                    print(f"round {i + 1}/{a.rounds}: {name} done", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
    peak = max(x for r in runs["matmul"] for x in r["gflops"])
    med = {name: {rr: statistics.median([x for r in rs for x in r[rr]]) for rr in ("rr1", "rr32")}
           for name, rs in runs.items() if name != "matmul"}
    mflop = {v: runs[v][0]["mflop"] for v in ("before", "after")}
    rows = []
    for rr in ("rr1", "rr32"):
        for name in ("before", "after", "sbx"):
            share = f"{med[name][rr] * mflop.get(name, mflop['after']) / 1e3 / peak:.0%}"
            rows.append((f"{name:<7} {rr.upper()} (updates/s)", med[name][rr], share,
                         med[name][rr] / med["sbx"][rr]))
    print(f"\nmatmul bound (best rep): {peak:.1f} GFLOP/s; SAC update: {mflop['before']:.2f} MFLOP before, "
          f"{mflop['after']:.2f} MFLOP after; compiled RR 1 update identical: {same_hlo}")
    print(f"{'measurement':<28} {'median':>9} {'of bound':>9} {'x sbx':>7}")
    for name, value, share, ratio in rows:
        print(f"{name:<28} {value:9.1f} {share:>9} {ratio:7.2f}")
    result = {"machine": platform.processor() or platform.machine(), "before": a.before, "rounds": a.rounds,
              "seconds": a.seconds, "reps": a.reps, "matmul_peak_gflops": peak, "sac_update_mflop": mflop,
              "compiled_update_identical": same_hlo, "medians": med, "runs": runs}
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
