"""The ``replaylab`` command line: train, resume, eval.

A user's mistake prints one line, ``replaylab: error: ...``, and exits with code 2; a
run that cannot go on (non-finite loss, no valid checkpoint) exits with code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from replaylab.errors import ConfigError, RunError

TRAIN_EPILOG = """\
Settings are given as a config file (YAML, TOML or JSON; flat dotted keys or nested
mappings) and/or key=value overrides, which win. Every key, its default and what it takes:

{table}

example:
  replaylab train env=Hopper-v5 agent=sac replay_ratio=8 seeds=5 total_steps=100000 run_dir=runs/hopper
"""


def _parser() -> argparse.ArgumentParser:
    from replaylab.config import help_table

    p = argparse.ArgumentParser(prog="replaylab", description="Sample-efficient off-policy RL for continuous control.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = sub.add_parser("train", help="train an agent", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=TRAIN_EPILOG.format(table=help_table()),
                       usage="replaylab train [CONFIG_FILE] [key=value ...]")
    t.add_argument("settings", nargs="*", metavar="CONFIG_FILE|key=value",
                   help="an optional config file first, then key=value overrides")
    r = sub.add_parser("resume", help="continue a run from its newest valid checkpoint",
                       description="Continue RUN_DIR from its newest valid checkpoint; the result is identical "
                                   "to an uninterrupted run (wall-clock columns aside).")
    r.add_argument("run_dir", metavar="RUN_DIR")
    e = sub.add_parser("eval", help="evaluate a run's newest checkpoint",
                       description="Run the deterministic policy of RUN_DIR's newest checkpoint.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="episodes per seed (default: the run's eval_episodes)")
    e.add_argument("--video", default=None, metavar="PATH",
                   help="write seed 0's first episode as a video (.gif or .mp4) where a renderer is available")
    return p


def _train(settings: list[str]):
    from replaylab import api
    from replaylab.config import resolve

    config_file = None
    if settings and "=" not in settings[0]:
        config_file, settings = settings[0], settings[1:]
    return api.train(resolve(config_file, settings))


def _report(run) -> None:
    import numpy as np

    r = np.asarray(run.final_returns)
    spread = f" +- {r.std():.1f}" if len(r) > 1 else ""
    print(f"final return (mean over {len(r)} seed{'s' if len(r) > 1 else ''}): {r.mean():.1f}{spread}")
    print(f"run directory: {run.run_dir}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            _report(_train(args.settings))
        elif args.command == "resume":
            from replaylab import api

            _report(api.resume(args.run_dir))
        elif args.command == "eval":
            from replaylab import api

            if args.episodes is not None and args.episodes < 1:
                raise ConfigError(f"--episodes={args.episodes}: expected an integer >= 1")
            returns = api.evaluate(args.run_dir, args.episodes, args.video)
            cfg = api.load_run_config(args.run_dir)
            for s, r in zip(cfg.seed_list, returns):
                print(f"seed {s}: return {r.mean():.1f} +- {r.std():.1f} over {len(r)} episodes")
            if args.video:
                print(f"video: {Path(args.video)}")
    except ConfigError as e:
        print(f"replaylab: error: {e}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"replaylab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; continue with 'replaylab resume RUN_DIR'", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
