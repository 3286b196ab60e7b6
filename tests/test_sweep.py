"""Sweeps (`replaylab compare --sweep`, `--workers`, `--ray`): a real grid through the CLI on a
local pool of worker processes and on Ray, killed mid-way and resumed to the same summary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replaylab import compare, executors
from replaylab.errors import ConfigError
from tests.conftest import overrides
from tests.test_compare import GRID_SETTINGS

SETTINGS = {**GRID_SETTINGS, "checkpoint_interval": 150}  # test_compare's tiny cells, with checkpoints
# 3 cells on 2 workers: two run at once, the third waits for a free worker
ARGS = ["--methods", "uniform", "--envs", "Pendulum-v1", "--sweep", "replay_ratio=1,2,3", "--seeds", "2",
        "--reps", "200"]


def sweep_command(out: Path, *executor: str) -> list[str]:
    return [sys.executable, "-m", "replaylab", "compare", *ARGS, "--out", str(out), *executor, *overrides(SETTINGS)]


def summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {"rows": s["rows"], "failed": s["failed"], "methods": s["methods"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The grid run once, uninterrupted, on 2 local workers."""
    out = tmp_path_factory.mktemp("sweep") / "ref"
    r = subprocess.run(sweep_command(out, "--workers", "2"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "on 2 local workers" in r.stdout
    s = summary(out)
    assert s["failed"] == [] and s["methods"] == [f"uniform replay_ratio={k}" for k in (1, 2, 3)]
    assert len(s["rows"]) == 3 * 2 * 2  # settings x metrics x budgets (300, 600)
    return s


def children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    return kids


def kill_midway(command: list[str], out: Path, group: bool = False, timeout: float = 300) -> list[int]:
    """Start a sweep, SIGKILL it (its process group with ``group``) once a cell wrote its first
    checkpoint and before all cells finished; returns the worker pids seen just before."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and not any((out / "runs").glob("*/checkpoints/step_*")):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    workers = children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL) if group else os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the kill came too late"
    return workers


def test_pool_sweep_killed_midway_resumes_to_the_same_summary(reference, tmp_path):
    out = tmp_path / "out"
    workers = kill_midway(sweep_command(out, "--workers", "2"), out)
    assert len(workers) == 2
    deadline = time.time() + 10  # the workers die with the sweep (PR_SET_PDEATHSIG), leaving no orphans
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{w}").exists() for w in workers)
    r = subprocess.run(sweep_command(out, "--workers", "2"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "resuming from its newest checkpoint" in r.stdout
    assert summary(out) == reference


# The Ray tests share /tmp/ray (the current cluster's address): one xdist worker runs both.
@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_ray_sweep_killed_midway_resumes_to_the_same_summary(reference, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # the local instance the sweep joins
    try:
        out = tmp_path / "out"
        kill_midway(sweep_command(out, "--ray", "auto"), out, group=True)
        r = subprocess.run(sweep_command(out, "--ray", "auto"), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert "on Ray (auto)" in r.stdout and "resuming from its newest checkpoint" in r.stdout
        assert summary(out) == reference
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_ray_sweep_spreads_over_the_nodes_of_a_cluster(reference, tmp_path):
    """A two-node Ray cluster (two raylets on this machine, one CPU each, started as on a
    real cluster) joined by address: the cells run on both nodes, each log names its node,
    and the summary is the uninterrupted local one."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        r = subprocess.run(sweep_command(out, "--ray", cluster.address), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr
        nodes = {log.read_text().split()[2] for log in (out / "logs").glob("*.log")}
        assert len(nodes) == 2, nodes  # 3 one-CPU cells on 2 one-CPU nodes: both nodes ran cells
        assert summary(out) == reference
    finally:
        cluster.shutdown()


def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path):
    # an enormous critic learning rate makes one cell's losses overflow once updates start
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "replaylab", "compare", "--methods", "uniform", "--envs", "Pendulum-v1",
           "--sweep", "agent.critic_lr=0.0003,1e12", "--seeds", "2", "--reps", "100", "--out", str(out),
           "--workers", "2", *overrides(SETTINGS)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["replaylab: error: 1 cell of the grid failed (listed above); "
                                             "the rest are reported"]
    s = summary(out)
    assert s["methods"] == ["uniform agent.critic_lr=0.0003"]
    assert [f["cell"] for f in s["failed"]] == ["Pendulum-v1 uniform agent.critic_lr=1e+12"]
    assert "non-finite loss" in s["failed"][0]["error"]
    assert Path(s["failed"][0]["log"]).read_text().count("replaylab: error: non-finite loss") == 1


def test_a_killed_worker_is_named_in_its_error(tmp_path):
    """A worker that dies from a signal (OOM killer, a kill) is reported as such."""
    log = tmp_path / "cell.log"
    log.write_text("step 100\n")
    job = executors.Job("Pendulum-v1 uniform", ("train", "cell.json"), log)
    proc = subprocess.Popen(["sleep", "30"])
    proc.kill()
    proc.wait()
    assert executors.failure(proc.returncode, job.log) == "worker killed by SIGKILL (last output: step 100)"
    log.write_text("Traceback ...\nreplaylab: error: non-finite loss at gradient update 3\n")
    assert executors.failure(1, log) == "non-finite loss at gradient update 3"
    start = log.stat().st_size  # a later attempt is judged by its own output only
    with open(log, "a") as f:
        f.write("Traceback ...\nMemoryError\n")
    assert executors.failure(1, log, start) == "exit code 1: MemoryError"


def test_sweep_grid_files_and_options(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text("methods: {sac: {}, td3: {agent: td3}}\nenvs: [Pendulum-v1]\nseeds: 2\n"
                 "sweep: {replay_ratio: [1, 8], agent.hidden_sizes: [[64, 64], [256, 256]]}\n"
                 "overrides: {total_steps: 1000}\n")
    grid = compare.resolve_grid(compare.load_grid_file(f), {}, {})
    cells = compare.cell_configs(grid)
    assert len(cells) == 2 * 2 * 2
    labels = [label for _, label, _ in cells]
    assert labels[0] == "sac replay_ratio=1 agent.hidden_sizes=[64, 64]"
    by_label = {label: cfg for _, label, cfg in cells}
    cfg = by_label["td3 replay_ratio=8 agent.hidden_sizes=[256, 256]"]
    assert cfg.agent == "td3" and cfg.replay_ratio == 8 and list(cfg.agent_cfg.hidden_sizes) == [256, 256]
    assert len({c.run_dir for _, _, c in cells}) == 8 and all("=" not in Path(c.run_dir).name for _, _, c in cells)
    # the command line adds to the file's sweep
    grid = compare.resolve_grid(compare.load_grid_file(f), {"sweep": compare.parse_sweep(["agent.critic_lr=1e-3,3e-4"])},
                                {})
    assert len(compare.cell_configs(grid)) == 16
    assert compare.parse_sweep(["agent.hidden_sizes=[64,64],[32,32]"]) == {"agent.hidden_sizes": [[64, 64],
                                                                                                   [32, 32]]}
    assert compare.parse_sweep(["agent.hidden_sizes=[32,64]"]) == {"agent.hidden_sizes": [[32, 64]]}  # one net
    assert compare.parse_sweep(["agent.critic_lr=3e-4,1e-3"]) == {"agent.critic_lr": [3e-4, 1e-3]}
    for bad, message in [(["replay_ratio"], "expected key=value1,value2"),
                         (["agent.critic_lr=3e-4,0.0003"], "non-empty list of distinct values"),
                         (["replay_ratio=1,1"], "non-empty list of distinct values"),
                         (["env=Hopper-v5,Walker2d-v5"], "use --envs instead"),
                         (["seeds=1,2"], "use --seeds instead")]:
        with pytest.raises(ConfigError, match=message):
            compare.parse_sweep(bad)
    with pytest.raises(ConfigError, match="replay_ratio=0"):  # every swept value is validated before training
        compare.cell_configs(compare.resolve_grid(None, {"methods": "uniform", "envs": "Pendulum-v1",
                                                         "sweep": compare.parse_sweep(["replay_ratio=1,0"])}, {}))
    with pytest.raises(ConfigError, match="both swept and set"):
        compare.resolve_grid(None, {"methods": "uniform", "envs": "Pendulum-v1",
                                    "sweep": {"replay_ratio": [1, 2]}}, {"replay_ratio": 4})


def test_executor_options_are_checked(tmp_path, capsys):
    from replaylab.cli import main

    base = ["compare", "--methods", "uniform", "--envs", "Pendulum-v1", "--out", str(tmp_path / "o")]
    for extra, message in [(["--workers", "0"], "--workers=0: expected an integer >= 1"),
                           (["--ray", "local", "--gpus-per-cell", "-1"], "--gpus-per-cell=-1: expected a number"),
                           (["--cpus-per-cell", "2"], "give --ray ADDRESS too"),
                           (["--sweep", "replay_ratio="], "expected key=value1,value2")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert executors.default_workers(1) == 1
    assert executors.default_workers(100) == len(executors.usable_cores())
    env = executors.worker_env(1, 0.0)
    assert "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"] and env["OMP_NUM_THREADS"] == "1"
    assert env["JAX_PLATFORMS"] == "cpu"  # no GPU share: the worker keeps off the GPU
    env = executors.worker_env(4, 0.5)
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.375"  # its share of JAX's usual 75%
    assert env.get("JAX_PLATFORMS") == os.environ.get("JAX_PLATFORMS")  # a GPU share: left as the user set it
