"""`replaylab compare`: a real (tiny) grid through the CLI, its report, and bad input."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from replaylab.analysis.aggregate import (
    RunRecord, aggregate, curve_score, default_budgets, iqm, iqm_interval, normalise_per_env, table_csv, table_text)
from replaylab.cli import main
from replaylab.training.logs import read_progress
from tests.conftest import cli, overrides, progress_without_wall_clock

GRID_SETTINGS = {
    "total_steps": 600,
    "warmup_steps": 200,
    "eval_interval": 300,
    "eval_episodes": 1,
    "buffer_size": 1000,
    "batch_size": 32,
    "checkpoint_interval": 0,
    "progress_bar": False,
    "tensorboard": False,
    "agent.hidden_sizes": [16, 16],
}
GRID_ARGS = ["--methods", "uniform,mixup", "--envs", "Pendulum-v1", "--seeds", "2", "--reps", "300"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    r = cli("compare", *GRID_ARGS, "--out", str(out), *overrides(GRID_SETTINGS))
    assert r.returncode == 0, r.stderr
    return out, r


def _csv_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def test_grid_trains_one_run_per_cell_and_reports(grid):
    out, r = grid
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["Pendulum-v1-mixup", "Pendulum-v1-uniform"]
    finals = {}
    for method in ("uniform", "mixup"):
        run_dir = out / "runs" / f"Pendulum-v1-{method}"
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["replay"], config["seeds"], config["total_steps"]) == (method, 2, 600)
        assert config["agent.hidden_sizes"] == [16, 16]
        progress = read_progress(run_dir / "progress.csv")
        assert [(p["env_step"], p["seed"]) for p in progress] == [(300, 0), (300, 1), (600, 0), (600, 1)]
        finals[method] = progress

    rows = _csv_rows(out / "summary.csv")
    assert list(rows[0]) == ["env", "method", "metric", "budget", "iqm", "ci_low", "ci_high", "n_runs"]
    # one env: only its own rows, no "all" row
    assert [(x["env"], x["method"], x["metric"], x["budget"]) for x in rows] == [
        ("Pendulum-v1", m, metric, b) for m in ("uniform", "mixup") for metric in ("return", "auc")
        for b in ("300", "600")]
    for x in rows:
        lo, mid, hi = float(x["ci_low"]), float(x["iqm"]), float(x["ci_high"])
        assert np.isfinite([lo, mid, hi]).all() and lo <= mid <= hi
        assert int(x["n_runs"]) == 2
        # one env and two seeds: the IQM is the mean of the two seeds' scores
        progress = finals[x["method"]]
        per_seed = [[p["return_mean"] for p in progress if p["seed"] == s and p["env_step"] <= int(x["budget"])]
                    for s in (0, 1)]
        want = np.mean([c[-1] if x["metric"] == "return" else np.mean(c) for c in per_seed])
        assert mid == pytest.approx(want, rel=1e-9, abs=1e-9)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["budgets"] == [300, 600] and summary["envs"] == ["Pendulum-v1"]
    assert summary["methods"] == ["uniform", "mixup"] and summary["grid"]["seeds"] == 2
    assert len(summary["rows"]) == len(rows)
    for js, cs in zip(summary["rows"], rows):
        assert (js["env"], js["method"], js["metric"], str(js["budget"]), str(js["n_runs"])) == \
            (cs["env"], cs["method"], cs["metric"], cs["budget"], cs["n_runs"])
        assert [js[k] for k in ("iqm", "ci_low", "ci_high")] == [float(cs[k]) for k in ("iqm", "ci_low", "ci_high")]
    assert sorted(run["method"] for run in summary["runs"]) == ["mixup", "uniform"]
    assert summary["normalisation"] is None

    width, height = _png_size(out / "curves.png")
    assert width > 200 and height > 200
    assert not list(out.glob(".*tmp*"))
    assert "uniform" in r.stdout and "mixup" in r.stdout and "95% CI" in r.stdout
    assert "Pendulum-v1" in r.stdout and "normalised" not in r.stdout
    assert r.stdout.count("training ->") == 2


def test_running_the_grid_again_skips_finished_cells(grid):
    out, _ = grid
    progress = out / "runs" / "Pendulum-v1-uniform" / "progress.csv"
    before = (progress.read_bytes(), progress.stat().st_mtime_ns, (out / "summary.csv").read_text())
    r = cli("compare", *GRID_ARGS, "--out", str(out), *overrides(GRID_SETTINGS))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("finished already, skipped") == 2 and "training ->" not in r.stdout
    assert (progress.read_bytes(), progress.stat().st_mtime_ns, (out / "summary.csv").read_text()) == before


def test_an_interrupted_cell_resumes_or_starts_again(tmp_path):
    out = tmp_path / "out"
    args = ["compare", "--methods", "uniform", "--envs", "Pendulum-v1", "--seeds", "2", "--reps", "100",
            "--out", str(out), *overrides({**GRID_SETTINGS, "checkpoint_interval": 300})]
    assert cli(*args).returncode == 0
    run_dir = out / "runs" / "Pendulum-v1-uniform"
    progress = run_dir / "progress.csv"
    complete = progress_without_wall_clock(run_dir)

    def interrupt_after_step_300(keep_checkpoint: bool):
        for ckpt in (run_dir / "checkpoints").glob("step_*"):
            if not (keep_checkpoint and ckpt.name.endswith("0300")):
                for f in ckpt.iterdir():
                    f.unlink()
                ckpt.rmdir()
        progress.write_text("".join(progress.read_text().splitlines(keepends=True)[:3]))

    interrupt_after_step_300(keep_checkpoint=True)
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming from its newest checkpoint" in r.stdout
    assert progress_without_wall_clock(run_dir) == complete  # exact resume

    interrupt_after_step_300(keep_checkpoint=False)
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "starting it again" in r.stdout and progress_without_wall_clock(run_dir) == complete


def test_report_on_existing_runs_gives_the_same_table(grid, tmp_path):
    out, _ = grid
    r = cli("compare", "--runs", str(out / "runs"), "--out", str(tmp_path / "report"), "--reps", "300")
    assert r.returncode == 0, r.stderr
    key = lambda row: (row["env"], row["method"], row["metric"], row["budget"])  # noqa: E731
    assert sorted(_csv_rows(tmp_path / "report" / "summary.csv"), key=key) == \
        sorted(_csv_rows(out / "summary.csv"), key=key)
    _png_size(tmp_path / "report" / "curves.png")
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["grid"] is None


def test_iqm_is_the_mean_of_the_middle_half():
    scores = np.array([[9.0, -3.0], [1.0, 100.0], [4.0, 2.0], [7.0, 5.0]])  # 4 runs x 2 tasks
    middle = np.sort(scores.ravel())[2:6]  # drop the lowest and highest quarter (2 of 8 each)
    assert iqm(scores) == pytest.approx(middle.mean()) == pytest.approx(4.5)
    point, lo, hi = iqm_interval(scores, reps=500)
    assert point == pytest.approx(4.5) and lo <= point <= hi and hi - lo > 0
    assert iqm_interval(scores, reps=500) == (point, lo, hi)  # seeded: reproducible
    assert iqm_interval(np.full((3, 2), 7.0), reps=100) == (7.0, 7.0, 7.0)


def _middle_half_mean(x) -> float:
    """The IQM by hand: the mean of the middle 50% of the sorted scores (a multiple of 4 of them)."""
    x = np.sort(np.ravel(x))
    assert len(x) % 4 == 0
    return float(x[len(x) // 4: len(x) - len(x) // 4].mean())


def _records(returns: dict[tuple[str, str], list[float]]) -> list[RunRecord]:
    """One finished run per (env, method), one seed per score, evaluated once at step 1000."""
    records = []
    for (env, method), scores in returns.items():
        config = {"env": env, "agent": "sac", "replay": method, "total_steps": 1000}
        curves = {seed: [(1000, float(x))] for seed, x in enumerate(scores)}
        records.append(RunRecord(Path(f"runs/{env}-{method}"), config, curves, method=method))
    return records


# Two envs whose returns differ in scale by 1000x: raw pooling would let "big" decide alone.
SCALED = {
    ("big", "uniform"): [9000.0, 8000.0, 1000.0, 7000.0],
    ("big", "per"): [9500.0, 4000.0, 6000.0, 8500.0],
    ("small", "uniform"): [2.0, 5.0, 3.0, 4.0],
    ("small", "per"): [1.0, 1.5, 2.5, 0.5],
}


def test_rows_per_env_and_normalised_rows_over_all_envs(tmp_path):
    rows = aggregate(_records(SCALED), [1000], reps=200)
    assert [(r["env"], r["method"], r["metric"]) for r in rows] == [
        (env, m, metric) for env in ("big", "small", "all") for m in ("per", "uniform") for metric in ("return", "auc")]
    by = {(r["env"], r["method"], r["metric"]): r for r in rows}
    for (env, method), scores in SCALED.items():
        for metric in ("return", "auc"):  # one evaluation per run: auc == return
            r = by[env, method, metric]
            assert r["iqm"] == pytest.approx(_middle_half_mean(scores), rel=1e-12)
            assert r["ci_low"] <= r["iqm"] <= r["ci_high"] and r["n_runs"] == 4 and r["budget"] == 1000

    # "all": per env, (s - lowest) / (highest - lowest) over both methods' runs, then the IQM of runs x envs
    lo_hi = {env: (min(v for (e, _), s in SCALED.items() if e == env for v in s),
                   max(v for (e, _), s in SCALED.items() if e == env for v in s)) for env in ("big", "small")}
    for method in ("uniform", "per"):
        normalised = [(x - lo_hi[env][0]) / (lo_hi[env][1] - lo_hi[env][0]) for env in ("big", "small")
                      for x in SCALED[env, method]]
        r = by["all", method, "return"]
        assert 0.0 <= r["ci_low"] <= r["iqm"] <= r["ci_high"] <= 1.0 and r["n_runs"] == 4
        assert r["iqm"] == pytest.approx(_middle_half_mean(normalised), rel=1e-12)
    # uniform is ahead on both envs, so it is ahead over all envs too
    assert by["all", "uniform", "return"]["iqm"] > by["all", "per", "return"]["iqm"]

    # the "all" rows do not depend on an env's scale or offset
    rescaled = {(env, m): [x * 1000.0 - 7.0 if env == "small" else x for x in s] for (env, m), s in SCALED.items()}
    again = {(r["env"], r["method"], r["metric"]): r for r in aggregate(_records(rescaled), [1000], reps=200)}
    for method in ("uniform", "per"):
        for k in ("iqm", "ci_low", "ci_high"):
            assert again["all", method, "return"][k] == pytest.approx(by["all", method, "return"][k], abs=1e-12)

    # deterministic: the same runs, in any order, give the identical table
    shuffled = _records(dict(reversed(list(SCALED.items()))))
    again = aggregate(shuffled, [1000], reps=200)
    assert again == rows and table_text(again) == table_text(rows) and table_csv(again) == table_csv(rows)
    text = table_text(rows).splitlines()
    assert text[0].split()[:4] == ["env", "method", "metric", "budget"]
    assert [line.split()[0] for line in text[1:]] == [r["env"] for r in rows]


def test_report_with_two_envs_writes_the_env_column_and_explains_all(tmp_path):
    from replaylab.compare import report

    lines: list[str] = []
    rows = report(_records(SCALED), tmp_path / "out", reps=100, echo=lines.append)
    csv_rows = _csv_rows(tmp_path / "out" / "summary.csv")
    assert list(csv_rows[0])[0] == "env" and [x["env"] for x in csv_rows] == [r["env"] for r in rows]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"] == rows and "normalised per env to [0, 1]" in summary["normalisation"]
    printed = "\n".join(lines)
    assert "all: scores normalised per env to [0, 1] by the lowest and highest score of any run" in printed
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_normalising_per_env():
    scores = {"a": {"e": np.array([10.0, 20.0]), "f": np.array([3.0, 3.0])},
              "b": {"e": np.array([30.0, 15.0]), "f": np.array([3.0, 3.0])}}
    out = normalise_per_env(scores)
    np.testing.assert_array_equal(out["a"]["e"], [0.0, 0.5])
    np.testing.assert_array_equal(out["b"]["e"], [1.0, 0.25])
    np.testing.assert_array_equal(out["a"]["f"], [0.5, 0.5])  # every run scores the same


def test_budgets_and_curve_scores():
    curve = [(300, -10.0), (600, -4.0), (900, 2.0)]
    assert curve_score(curve, 900, "return") == 2.0 and curve_score(curve, 800, "return") == -4.0
    assert curve_score(curve, 600, "auc") == -7.0 and curve_score(curve, 900, "auc") == pytest.approx(-4.0)
    config = {"env": "Pendulum-v1", "agent": "sac", "replay": "uniform", "total_steps": 900}
    run = RunRecord(Path("a"), config, {0: curve, 1: curve[:2]})
    assert run.last_step == 600 and not run.finished
    assert default_budgets([run]) == [300, 600]
    assert default_budgets([RunRecord(Path("b"), config, {0: [(900, 1.0)]})]) == [900]
    every_2000 = {0: [(s, 1.0) for s in range(2000, 30001, 2000)] + [(30000, 1.0)]}
    assert default_budgets([RunRecord(Path("c"), {**config, "total_steps": 30000}, every_2000)]) == [14000, 30000]


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("replaylab: error: ") and needle in lines[0], err


def test_bad_input_through_the_real_entry_point(tmp_path):
    r = cli("compare", "--methods", "uniform,nmr", "--envs", "Pendulum-v1", "--out", str(tmp_path))
    _one_line_error(r.returncode, r.stderr, "unknown replay method 'nmr'; expected some of")
    assert "did you mean 'nmer'" in r.stderr and not (tmp_path / "runs").exists()
    r = cli("compare", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    _one_line_error(r.returncode, r.stderr, "no such directory")


@pytest.mark.parametrize("args, needle", [
    (["--methods", "uniform", "--envs", "Pendulum-v1", "--steps", "300,lots"], "expected comma-separated integers"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "--steps", "1.5"], "expected comma-separated integers"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "--seeds", "two"], "--seeds=two: expected an integer"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "replay=per"], "use --methods instead"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "replay.k=4"], "none of the methods uniform takes it"),
    (["--methods", "uniform", "--envs", "Pendulum-v9"], "Pendulum-v9"),
    (["--methods", "uniform"], "--envs not given"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "total_steps=600", "--steps", "900"],
     "--steps 900: beyond the grid's total_steps=600"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "--sweep", "total_steps=1200,600", "eval_interval=300",
      "--steps", "900"],
     "--steps 900: beyond total_steps=600 of cell 'Pendulum-v1 uniform total_steps=600'"),
    (["--methods", "uniform", "--envs", "Pendulum-v1", "total_steps=1200", "--sweep", "eval_interval=300,600",
      "--steps", "450"], "--steps 450: before first evaluation, at step 600 of cell 'Pendulum-v1 uniform eval_interval=600'"),
    (["--runs", "RUN", "--methods", "uniform"], "cannot be combined with --methods"),
    (["--runs", "RUN", "--steps", "300,6000"], "only reached step 600"),
    (["--config", "missing.yaml"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(
        {"env": "Pendulum-v1", "agent": "sac", "replay": "uniform", "total_steps": 600, "seeds": 1}))
    (run_dir / "progress.csv").write_text("env_step,seed,return_mean\n300,0,-900.5\n600,0,-700.25\n")
    args = [str(run_dir) if a == "RUN" else str(tmp_path / a) if a.endswith(".yaml") else a for a in args]
    code = main(["compare", *args, "--out", str(tmp_path / "out")])
    _one_line_error(code, capsys.readouterr().err, needle)
    assert not (tmp_path / "out" / "runs").exists()


def test_run_dir_without_progress_and_changed_settings(grid, tmp_path, capsys):
    out, _ = grid
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((out / "runs" / "Pendulum-v1-uniform" / "config.json").read_text())
    _one_line_error(main(["compare", "--runs", str(bare)]), capsys.readouterr().err, "no progress.csv")
    # the same --out with other settings must not reuse (or overwrite) the finished cells
    changed = {**GRID_SETTINGS, "total_steps": 900}
    code = main(["compare", *GRID_ARGS, "--out", str(out), *overrides(changed)])
    _one_line_error(code, capsys.readouterr().err, "holds a run with total_steps=600 but the grid asks for")


def test_grid_file(tmp_path, capsys):
    f = tmp_path / "grid.yaml"
    f.write_text("methods: [uniform, nmr]\nenvs: [Pendulum-v1]\nseeds: 2\noverrides:\n  total_steps: 600\n")
    _one_line_error(main(["compare", "--config", str(f)]), capsys.readouterr().err, "unknown replay method 'nmr'")
    f.write_text("methods: [uniform]\nenvs: [Pendulum-v1]\nseed: 2\n")
    _one_line_error(main(["compare", "--config", str(f)]), capsys.readouterr().err, "did you mean 'seeds'?")


def test_the_default_grid_file_is_valid():
    from replaylab.compare import cell_configs, load_grid_file, resolve_grid

    path = Path(__file__).parent.parent / "configs" / "compare.yaml"
    grid = resolve_grid(load_grid_file(path), {}, {})
    assert grid.methods == ["uniform", "nmer", "lcer_rm", "ct"] and grid.seeds == 3
    assert grid.envs == ["InvertedDoublePendulum-v5", "Hopper-v5"]
    cells = cell_configs(grid)
    assert len(cells) == 8
    assert all(c.total_steps == 30000 and c.agent == "sac" and c.warmup_steps <= 5000 and c.seeds == 3
               for _, _, c in cells)
    assert {Path(c.run_dir).name for _, _, c in cells} >= {"Hopper-v5-lcer_rm", "InvertedDoublePendulum-v5-ct"}


def test_the_committed_grid_files_are_valid_and_keep_empty_methods():
    """Every configs/compare*.yaml resolves; a method given as ``name: {}`` (the shared settings
    alone, e.g. the SAC baseline) is a cell like any other, not silently dropped."""
    from replaylab.compare import cell_configs, load_grid_file, resolve_grid

    files = sorted((Path(__file__).parent.parent / "configs").glob("compare*.yaml"))
    assert len(files) >= 3
    for path in files:  # each resolves and validates every cell's settings, or raises
        assert cell_configs(resolve_grid(load_grid_file(path), {}, {}))
    grid = resolve_grid(load_grid_file(Path(__file__).parent.parent / "configs" / "compare_mbpo_hopper.yaml"), {}, {})
    assert grid.methods == ["sac", "sac_rr20", "mbpo"]
    cells = {m: c for _, m, c in cell_configs(grid)}
    assert cells["sac"].replay_ratio == 1 and cells["sac"].model == "none"
    assert cells["sac_rr20"].replay_ratio == 20 and cells["mbpo"].model == "mbpo"


def test_runs_read_without_a_grid_are_labelled_by_the_settings_in_which_they_differ():
    """A sweep's runs read back with --runs or `replaylab report` do not pool: 'uniform
    replay_ratio=8' and 'uniform replay_ratio=1', as the sweep labelled them."""
    from replaylab.analysis.aggregate import label_methods

    def run(name, **cfg):
        return RunRecord(Path(name), {"env": "Pendulum-v1", "agent": "sac", "replay": "uniform", "seed": 0, **cfg}, {})

    records = [run("a", replay_ratio=1, seed=0), run("b", replay_ratio=8), run("c", replay_ratio=1, seed=5),
               run("d", replay="nmer", replay_ratio=1), run("e", replay_ratio=1, **{"agent.critic_lr": 3e-4})]
    label_methods(records)
    assert [r.method for r in records] == [
        "uniform agent.critic_lr=null replay_ratio=1", "uniform agent.critic_lr=null replay_ratio=8",
        "uniform agent.critic_lr=null replay_ratio=1", "nmer", "uniform agent.critic_lr=0.0003 replay_ratio=1"]

    # a setting that differs on one env labels the method on every env; one differing only by env does not
    records = [run("h1", env="Hopper-v5", replay_ratio=1, batch_size=256),
               run("h8", env="Hopper-v5", replay_ratio=8, batch_size=256),
               run("w1", env="Walker2d-v5", replay_ratio=1, batch_size=100)]
    label_methods(records)
    assert [r.method for r in records] == ["uniform replay_ratio=1", "uniform replay_ratio=8", "uniform replay_ratio=1"]


def test_a_swept_replay_parameter_is_crossed_only_with_the_methods_that_take_it(tmp_path):
    from replaylab.compare import Grid, cell_configs
    from replaylab.errors import ConfigError

    grid = Grid(methods=["uniform", "nmer"], envs=["Pendulum-v1"], out=str(tmp_path),
                sweep={"replay.k": [5, 10], "replay_ratio": [1, 2]})
    cells = {label: cfg for _, label, cfg in cell_configs(grid)}
    assert sorted(cells) == ["nmer replay.k=10 replay_ratio=1", "nmer replay.k=10 replay_ratio=2",
                             "nmer replay.k=5 replay_ratio=1", "nmer replay.k=5 replay_ratio=2",
                             "uniform replay_ratio=1", "uniform replay_ratio=2"]
    assert cells["nmer replay.k=10 replay_ratio=2"].replay_cfg["k"] == 10
    with pytest.raises(ConfigError, match="'replay.k': none of the methods uniform, per takes it"):
        cell_configs(Grid(methods=["uniform", "per"], envs=["Pendulum-v1"], sweep={"replay.k": [5, 10]}))
