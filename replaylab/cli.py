"""The ``replaylab`` command line: train, resume, eval, compare, report, envs.

A user's mistake prints one line, ``replaylab: error: ...``, and exits with code 2; a
run that cannot go on (non-finite loss, no valid checkpoint) exits with code 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from replaylab.errors import ConfigError, RunError, one_line

TRAIN_EPILOG = """\
Settings are given as a config file (YAML, TOML or JSON; flat dotted keys or nested
mappings) and/or key=value overrides, which win. Every key, its default and what it takes:

{table}

examples:
  replaylab train env=Hopper-v5 agent=sac replay_ratio=8 seeds=5 total_steps=100000 run_dir=runs/hopper
  replaylab train env=meta:cheetah-vel inference=pearl seeds=3 run_dir=runs/cv
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the house's one-line error (and exit code 2) instead of usage + error."""

    def error(self, message: str):
        self.exit(2, f"replaylab: error: {one_line(message)} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    from replaylab.config import help_table

    p = _Parser(prog="replaylab", description="Sample-efficient off-policy RL for continuous control.")
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
                       description="Run the deterministic policy of RUN_DIR's newest checkpoint. On a task "
                                   "distribution (env=meta:NAME) this is the adaptation protocol: on every test "
                                   "task (and the sampled train tasks), adapt_episodes episodes from the prior, "
                                   "the posterior updated between episodes; it prints the first and last "
                                   "episode's return per test task.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=None, metavar="N",
                   help="episodes per seed (default: the run's eval_episodes); on a task distribution, "
                        "adaptation episodes per task (default: the run's adapt_episodes)")
    e.add_argument("--video", default=None, metavar="PATH",
                   help="write seed 0's first episode as a video (.gif or .mp4) where a renderer is available")
    _compare_parser(sub)
    _report_parser(sub)
    sub.add_parser("envs", help="list the task distributions (env=meta:NAME)",
                   description="Every meta-environment family: its task parameters, default train/test task "
                               "counts (disjoint sets), episode length and dimensions.")
    return p


def _envs() -> None:
    from replaylab.envs.meta import family_table

    rows = family_table()
    print(f"{'env':<25} {'task parameters':<22} {'train/test':<11} {'steps':>5} {'obs':>4} {'act':>4}  description")
    for r in rows:
        print(f"{'meta:' + r['name']:<25} {', '.join(r['params']):<22} {str(r['num_train']) + '/' + str(r['num_test']):<11} "
              f"{r['episode_length']:>5} {r['obs_dim']:>4} {r['act_dim']:>4}  {r['description']}")
    print("\nGymnasium ids (e.g. Hopper-v5) and dmc:DOMAIN-TASK (e.g. dmc:cheetah-run) are single tasks.")


def _print_eval(run_dir: str, result, video: str | None) -> None:
    """``result``: ``api.evaluation``'s EvalResult."""
    from replaylab import api

    cfg = api.load_run_config(run_dir)
    returns = result.returns
    if not cfg.is_meta:
        for s, r in zip(cfg.seed_list, returns[..., 0]):
            print(f"seed {s}: return {r.mean():.1f} +- {r.std():.1f} over {len(r)} episodes")
    else:
        test = returns[:, : cfg.test_tasks]
        for s, r in zip(cfg.seed_list, test):
            print(f"seed {s}: mean over {r.shape[0]} test tasks: first episode {r[:, 0].mean():.1f}, "
                  f"last episode {r[:, -1].mean():.1f} (adaptation over {r.shape[1]} episodes)")
        if cfg.change_steps:
            n = cfg.test_tasks
            for i, s in enumerate(cfg.seed_list):
                sw = result.switched[i, :n, -1]
                if sw.any():
                    print(f"seed {s}: last episodes with a task switch: {int(sw.sum())} of {n}; their return "
                          f"before the first switch {result.before_switch[i, :n, -1][sw].mean():.1f}, "
                          f"after it {result.after_switch[i, :n, -1][sw].mean():.1f}")
                else:
                    print(f"seed {s}: no test task's last episode had a task switch")
        params = cfg.make_env().tasks.params
        print("per test task (mean over seeds): task, parameters, first and last episode return")
        for j in range(test.shape[1]):
            p = ", ".join(f"{x:.3g}" for x in params[cfg.train_tasks + j])
            print(f"  test task {cfg.train_tasks + j:>4}  {'[' + p + ']':<20} {test[:, j, 0].mean():9.1f} "
                  f"{test[:, j, -1].mean():9.1f}")
    if video:
        print(f"video: {Path(video)}")


COMPARE_DESCRIPTION = """\
Compare replay methods: train a grid of methods x envs x seeds, or read finished runs,
and report the interquartile mean (IQM) of the evaluation return with 95% stratified-
bootstrap confidence intervals (rliable) at step budgets, and learning curves.

A sweep (--sweep KEY=V1,V2 or sweep: in the grid file) crosses every method with every
combination of the swept values of any run settings. Each (method, setting, env) cell is
one run with seeds=S (trained at once), in OUT/runs/ENV-LABEL. Cells run on local worker
processes (--workers, one per core by default, each on its own cores) or as Ray tasks
(--ray). Running the same command again continues an interrupted grid, whichever executor
ran it: finished cells are skipped, an unfinished one resumes from its newest checkpoint.
A cell that fails is reported with its error (OUT/logs/CELL.log) and the others go on.
"""

COMPARE_EPILOG = """\
writes:
  OUT/summary.csv    env, method, metric, budget, iqm, ci_low, ci_high, n_runs
  OUT/summary.json   the same rows, the budgets, the runs read and the grid
  OUT/curves.png     one panel per env: mean return over seeds, band = min to max
  OUT/cells/         each cell's run settings; OUT/logs/ each worker's output

metrics, per budget B: return (the evaluation return at B, i.e. the last evaluation at or
before B) and auc (the mean evaluation return over the evaluations at or before B). Rows
per env give the IQM of that env's runs in its own units. With several envs, rows with
env=all give the IQM over runs x envs of scores normalised per env to [0, 1] by the lowest
and highest score of any run on that env (any method), so every env weighs the same.

grid file (--config), YAML, TOML or JSON; options given on the command line win:
  methods: [uniform, nmer]        envs: [Hopper-v5]         seeds: 3
  out: runs/compare               steps: [15000, 30000]     reps: 2000
  overrides: {total_steps: 30000, agent: sac}   # run settings, see 'replaylab train --help'
  sweep: {replay_ratio: [1, 8], agent.critic_lr: [3.0e-4, 1.0e-3]}   # crossed with the methods

examples:
  replaylab compare --methods uniform,nmer,lcer_rm,ct --envs InvertedDoublePendulum-v5,Hopper-v5 \\
      --seeds 3 --out runs/compare total_steps=30000 agent=sac
  replaylab compare --config configs/compare.yaml
  replaylab compare --methods uniform,nmer --envs Hopper-v5 --sweep replay_ratio=1,8,32 --workers 2
  replaylab compare --config configs/compare.yaml --ray auto --cpus-per-cell 2 --gpus-per-cell 0.25
  replaylab compare --runs runs/compare/runs runs/hopper-per --out runs/report --steps 10000,30000
"""


def _compare_parser(sub) -> None:
    from replaylab.analysis.aggregate import DEFAULT_REPS
    from replaylab.compare import DEFAULT_OUT, DEFAULT_SEEDS
    from replaylab.replay.methods import SAMPLERS

    c = sub.add_parser("compare", help="compare replay methods: IQM with 95%% CIs and learning curves",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=COMPARE_DESCRIPTION,
                       epilog=COMPARE_EPILOG,
                       usage="replaylab compare (--methods M,... --envs E,... | --config FILE | --runs DIR [DIR ...])"
                             " [options] [key=value ...]")
    c.add_argument("--methods", metavar="M,...",
                   help=f"replay methods, comma-separated, from: {', '.join(SAMPLERS)} "
                        "(default: none; needed unless --config or --runs gives them)")
    c.add_argument("--envs", metavar="E,...",
                   help="environments, comma-separated, e.g. Hopper-v5,dmc:cheetah-run "
                        "(default: none; needed unless --config or --runs gives them)")
    c.add_argument("--seeds", metavar="S", help=f"seeds per cell, trained at once (default: {DEFAULT_SEEDS})")
    c.add_argument("--out", metavar="OUT", help=f"output folder (default: {DEFAULT_OUT})")
    c.add_argument("--steps", metavar="B,...",
                   help="step budgets to report, comma-separated integers (default: the last evaluation step "
                        "all runs reached, and its half)")
    c.add_argument("--reps", metavar="N", help=f"bootstrap resamples per interval (default: {DEFAULT_REPS})")
    c.add_argument("--score", metavar="COLUMN", help="the progress.csv column compared, e.g. "
                   "test_return_after_switch (default: return_mean)")
    c.add_argument("--config", metavar="FILE",
                   help="read the grid (methods, envs, seeds, out, steps, reps, overrides) from a file "
                        "(default: none)")
    c.add_argument("--runs", nargs="+", metavar="DIR",
                   help="only report on finished runs: each DIR is a run directory or a folder of them; "
                        "trains nothing (default: none)")
    c.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                   help="cross every method with these values of a run setting; repeat to sweep several "
                        "settings, e.g. --sweep replay_ratio=1,8 --sweep agent.critic_lr=3e-4,1e-3 (default: none)")
    c.add_argument("--workers", metavar="N",
                   help="cells trained at once by local worker processes, each on its own share of the cores; "
                        "1 trains them one after the other in this process (default: one per core)")
    c.add_argument("--ray", metavar="ADDRESS", help="run the cells as Ray tasks: 'local' starts Ray on this "
                   "machine, 'auto' joins the running cluster, or a cluster address; OUT must be on storage every "
                   "node sees (default: not on Ray)")
    c.add_argument("--cpus-per-cell", metavar="C", help="Ray: CPUs each cell needs (default: 1)")
    c.add_argument("--gpus-per-cell", metavar="G", help="Ray: GPUs each cell needs, fractions allowed, e.g. 0.25 "
                   "(default: 0)")
    c.add_argument("settings", nargs="*", metavar="key=value",
                   help="run settings shared by every cell, as for 'replaylab train' (default: none)")


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


def _compare(args) -> None:
    from replaylab import compare
    from replaylab.config import parse_overrides

    reps = compare.parse_int(args.reps, "--reps") if args.reps is not None else None
    steps = compare.parse_steps(args.steps) if args.steps is not None else None
    if args.runs:
        given = [opt for opt, v in (("--methods", args.methods), ("--envs", args.envs), ("--seeds", args.seeds),
                                    ("--config", args.config), ("--sweep", args.sweep), ("--workers", args.workers),
                                    ("--ray", args.ray)) if v is not None]
        if given or args.settings:
            raise ConfigError(f"--runs reports on finished runs and trains nothing; it cannot be combined with "
                              f"{', '.join(given + (['key=value settings'] if args.settings else []))}")
        compare.report_runs(args.runs, args.out or compare.DEFAULT_OUT, steps,
                            reps if reps is not None else compare.DEFAULT_REPS,
                            score=compare.parse_score(args.score or "return_mean"))
        return
    file_values = compare.load_grid_file(args.config) if args.config else None
    options = dict(methods=args.methods, envs=args.envs, seeds=args.seeds, out=args.out, steps=steps, reps=reps,
                   score=args.score, sweep=compare.parse_sweep(args.sweep or []))
    if args.ray is None and (args.cpus_per_cell is not None or args.gpus_per_cell is not None):
        raise ConfigError("--cpus-per-cell and --gpus-per-cell size Ray tasks; give --ray ADDRESS too")
    if args.ray is not None and args.workers is not None:
        raise ConfigError("--workers sizes the local pool and --ray runs on Ray instead; give one of them")
    _, failed = compare.run_grid(
        compare.resolve_grid(file_values, options, parse_overrides(args.settings)),
        workers=compare.parse_int(args.workers, "--workers") if args.workers is not None else None, ray=args.ray,
        cpus_per_cell=compare.parse_float(args.cpus_per_cell or 1, "--cpus-per-cell", 0.01),
        gpus_per_cell=compare.parse_float(args.gpus_per_cell or 0, "--gpus-per-cell", 0.0))
    if failed:
        raise RunError(f"{compare._count(len(failed), 'cell')} of the grid failed (listed above); the rest are reported")


REPORT_EPILOG = """\
writes one HTML file, readable offline (figures embedded as PNG): the runs, the settings in
which they differ, throughput (SPS), and per env the learning curves, IQM with 95% CIs,
performance profiles and probability of improvement (rliable), per-task returns and task
encodings of meta-RL runs; with several envs, the same over envs.

examples:
  replaylab report runs/compare                  # a compare output folder -> runs/compare/report.html
  replaylab report runs/hopper runs/hopper-per --out hopper.html
"""


def _report_parser(sub) -> None:
    from replaylab.analysis.aggregate import DEFAULT_REPS

    r = sub.add_parser("report", help="one static HTML page over finished runs: curves, IQM, profiles, settings, SPS",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=REPORT_EPILOG,
                       description="Report on finished runs in one self-contained HTML file; trains nothing.")
    r.add_argument("dirs", nargs="+", metavar="DIR",
                   help="a run directory, a folder of them, or a 'replaylab compare' output folder")
    r.add_argument("--out", metavar="FILE", help="the HTML file (default: DIR/report.html for one DIR, "
                   "./report.html for several)")
    r.add_argument("--reps", metavar="N", help=f"bootstrap resamples per interval (default: {DEFAULT_REPS})")
    r.add_argument("--score", metavar="COLUMN", help="the progress.csv column compared (default: return_mean)")


def _html_report(args) -> None:
    from replaylab import compare
    from replaylab.analysis.report import write_report

    reps = compare.parse_int(args.reps, "--reps") if args.reps is not None else compare.DEFAULT_REPS
    write_report(args.dirs, args.out, reps, compare.parse_score(args.score or "return_mean"))


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
            _print_eval(args.run_dir, api.evaluation(args.run_dir, args.episodes, args.video), args.video)
        elif args.command == "envs":
            _envs()
        elif args.command == "report":
            _html_report(args)
        elif args.command == "compare":
            try:
                _compare(args)
            except KeyboardInterrupt:
                print("\ninterrupted; run the same 'replaylab compare' command again to continue "
                      "(finished runs are skipped)", file=sys.stderr)
                return 130
    except ConfigError as e:
        print(f"replaylab: error: {one_line(e)}", file=sys.stderr)
        return 2
    except RunError as e:
        print(f"replaylab: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; continue with 'replaylab resume RUN_DIR'", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
