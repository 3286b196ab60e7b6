"""Does memory stay flat over a long run? Peak and current RSS of ``replaylab train`` at 10%,
50% and 100% of a long run whose replay holds every step (default: 300k steps, a 300k
buffer): the storage is preallocated, so RSS should not grow after the first updates.

The run is the real command in a subprocess; its RSS (VmRSS) and peak (VmHWM) are read from
/proc as progress.csv reaches each fraction. Prints a table and writes
benchmarks/results/memory_flat.json.

    python benchmarks/memory_flat.py [--steps 300000] [--env Pendulum-v1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "memory_flat.json"
FRACTIONS = (0.1, 0.5, 1.0)


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def last_step(progress: Path) -> int:
    try:
        lines = progress.read_text().strip().splitlines()
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0
    except (OSError, ValueError):
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument("--env", default="Pendulum-v1")
    a = ap.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="memory_flat_")) / "run"
    interval = a.steps // 20
    settings = [f"env={a.env}", f"total_steps={a.steps}", f"buffer_size={a.steps}", "warmup_steps=5000",
                f"eval_interval={interval}", "eval_episodes=2", f"checkpoint_interval={a.steps // 4}",
                "agent.hidden_sizes=[64,64]", "batch_size=256", "progress_bar=false", "tensorboard=false",
                f"run_dir={run_dir}"]
    err = open(run_dir.parent / "stderr.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "replaylab", "train", *settings],
                            stdout=subprocess.DEVNULL, stderr=err, text=True)
    rows, t0, pending = [], time.perf_counter(), [f for f in FRACTIONS if f < 1]
    last, step = (0, 0), 0
    while proc.poll() is None:  # sample to the end: the 100% row is the last sample, at exit
        try:
            last = rss_kib(proc.pid)
        except (OSError, KeyError):  # exiting between poll and read
            break
        step = last_step(run_dir / "progress.csv")
        if pending and step >= pending[0] * a.steps:
            rows.append({"fraction": pending.pop(0), "env_step": step, "rss_mib": last[0] / 1024,
                         "peak_rss_mib": last[1] / 1024, "seconds": time.perf_counter() - t0})
        time.sleep(0.5)
    proc.wait()
    if proc.returncode != 0:
        err.seek(0)
        sys.exit(f"the run failed: {err.read()[-2000:]}")
    rows.append({"fraction": 1.0, "env_step": last_step(run_dir / "progress.csv"), "rss_mib": last[0] / 1024,
                 "peak_rss_mib": last[1] / 1024, "seconds": time.perf_counter() - t0})
    print(f"replaylab train env={a.env} total_steps={a.steps} buffer_size={a.steps} (SAC 64x64, 1 seed)")
    print(f"{'progress':>8} {'env step':>9} {'RSS MiB':>8} {'peak MiB':>9} {'wall s':>7}")
    for r in rows:
        print(f"{r['fraction']:>7.0%} {r['env_step']:>9} {r['rss_mib']:8.0f} {r['peak_rss_mib']:9.0f} {r['seconds']:7.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"env": a.env, "steps": a.steps, "buffer_size": a.steps, "rows": rows,
                                   "note": "RSS sampled every 0.5 s from /proc; the 100% row is the last sample "
                                           "before the process exited (after its last evaluation and checkpoint)"}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
