"""Exact resume after SIGKILL, corrupted-checkpoint fallback, and stopping on non-finite losses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import replaylab
from replaylab.errors import RunError
from tests.conftest import checkpoint_arrays, cli, overrides, progress_without_wall_clock

RESUME_CFG = dict(total_steps=1600, warmup_steps=200, eval_interval=200, checkpoint_interval=400,
                  replay_ratio=2, seeds=2, env="Hopper-v5", reset_interval=1000, reset_layers=1)


def _start(cfg: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "replaylab.cli", "train", *overrides(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _assert_same_run(a: str, b: str) -> None:
    assert progress_without_wall_clock(a) == progress_without_wall_clock(b)
    xa, xb = checkpoint_arrays(a), checkpoint_arrays(b)
    assert xa.keys() == xb.keys()
    for k in xa:
        assert np.array_equal(xa[k], xb[k], equal_nan=True), k


def test_sigkill_then_resume_is_bit_identical(small, tmp_path):
    ref = small(**RESUME_CFG)
    assert cli("train", *overrides(ref)).returncode == 0

    cfg = small(**RESUME_CFG)
    proc = _start(cfg)
    ckpts = Path(cfg["run_dir"]) / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpts / "step_0000000800").exists():
        time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: after the step-800 checkpoint, before the end
    proc.wait()
    assert not (ckpts / "step_0000001600").exists()

    r = cli("resume", cfg["run_dir"])
    assert r.returncode == 0, r.stderr
    assert "final return" in r.stdout
    _assert_same_run(ref["run_dir"], cfg["run_dir"])


def test_corrupted_latest_checkpoint_falls_back_with_a_warning(small, tmp_path):
    cfg = small(total_steps=800, checkpoint_interval=400, eval_interval=400)
    replaylab.train(cfg)
    ckpts = sorted((Path(cfg["run_dir"]) / "checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == ["step_0000000400", "step_0000000800"]
    with open(ckpts[-1] / "arrays.npz", "r+b") as f:  # flip bytes in the middle of the file
        f.seek(os.path.getsize(ckpts[-1] / "arrays.npz") // 2)
        f.write(b"\x00garbage\x00")
    r = cli("resume", cfg["run_dir"])
    assert r.returncode == 0, r.stderr
    assert "step_0000000800 is unusable (ValueError: checksum mismatch)" in r.stderr
    assert "falling back" in r.stderr
    # it resumed from step 400 (not from scratch) and re-wrote step 800
    rows = progress_without_wall_clock(cfg["run_dir"])
    assert [line.split(",")[0] for line in rows[1:]] == ["400", "800"]
    ref = small(total_steps=800, checkpoint_interval=400, eval_interval=400)
    replaylab.train(ref)
    _assert_same_run(ref["run_dir"], cfg["run_dir"])


def test_no_valid_checkpoint_is_an_error_not_a_fresh_start(small):
    cfg = small(total_steps=400, checkpoint_interval=400, eval_interval=400)
    replaylab.train(cfg)
    for meta in (Path(cfg["run_dir"]) / "checkpoints").glob("step_*/meta.json"):
        meta.write_text("{not json")
    r = cli("resume", cfg["run_dir"])
    assert r.returncode == 1
    assert "no valid checkpoint" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("replaylab: error: ")


def test_only_the_last_two_checkpoints_are_kept_and_no_temp_files_remain(small):
    cfg = small(total_steps=1000, checkpoint_interval=200, eval_interval=500)
    replaylab.train(cfg)
    names = sorted(p.name for p in (Path(cfg["run_dir"]) / "checkpoints").iterdir())
    assert names == ["step_0000000800", "step_0000001000"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(small):
    # an enormous critic learning rate makes the losses overflow once updates start (step 300),
    # after the checkpoints written during the warm-up
    cfg = small(total_steps=3000, warmup_steps=300, checkpoint_interval=100, eval_interval=100,
                agent__critic_lr=1e12)
    with pytest.raises(RunError, match="non-finite loss at gradient update"):
        replaylab.train(cfg)
    ckpts = sorted((Path(cfg["run_dir"]) / "checkpoints").glob("step_*"))
    assert ckpts, "the checkpoint written before the divergence must survive"
    arrays = checkpoint_arrays(cfg["run_dir"])
    assert all(np.all(np.isfinite(v)) for k, v in arrays.items() if k.startswith("state") and v.dtype.kind == "f")
    r = cli("resume", cfg["run_dir"])
    assert r.returncode == 1 and "non-finite loss" in r.stderr and "last good checkpoint" in r.stderr


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path):
    """While a process holds a run directory, another train/resume of it waits, then fails in
    one line; the lock goes with the process."""
    from replaylab.api import exclusive
    from replaylab.errors import ConfigError

    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "time.sleep(60)", str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match="another replaylab process is training this run"):
        with exclusive(tmp_path, wait=0.5):
            pass
    holder.kill()
    holder.wait()
    with exclusive(tmp_path, wait=5):  # free again once the holder is gone
        pass


def test_a_run_dir_taken_while_this_train_was_building_is_not_overwritten(small, monkeypatch):
    """Two trains of one new run_dir: the one that gets the lock second finds the other's
    config.json and stops in one line, leaving the other's files alone."""
    from replaylab import api
    from replaylab.errors import ConfigError

    cfg = small()
    build = api._build

    def build_while_another_takes_the_dir(c, run_dir):
        built = build(c, run_dir)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text('{"theirs": true}')  # the other train got there first
        return built

    monkeypatch.setattr(api, "_build", build_while_another_takes_the_dir)
    with pytest.raises(ConfigError, match="already holds a run"):
        replaylab.train(cfg)
    assert (Path(cfg["run_dir"]) / "config.json").read_text() == '{"theirs": true}'
    assert not (Path(cfg["run_dir"]) / "progress.csv").exists()


def _flock_holders(path: Path) -> list[int]:
    """The pids holding an flock on ``path`` (its device and inode), from /proc/locks."""
    st = os.stat(path)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return [int(f[4]) for f in (line.split() for line in Path("/proc/locks").read_text().splitlines())
            if f[1] == "FLOCK" and f[5] == device]


def _has_open(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except (FileNotFoundError, ProcessLookupError):  # a descriptor or the process went meanwhile
        return False


def test_processes_take_turns_to_check_the_memory_and_allocate(small, tmp_path):
    """While another process holds this machine's memory turn, a train waits for it (with the
    turn's file open) and allocates nothing; once the turn is free it checks, allocates, and
    gives the turn back before it trains on."""
    from replaylab.api import MEMORY_TURN

    turn = tmp_path / MEMORY_TURN
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY "
                               "| os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "sys.stdin.readline()", str(turn)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cfg = small(total_steps=1200, eval_interval=200, checkpoint_interval=1200)
    proc = None
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.Popen([sys.executable, "-m", "replaylab.cli", "train", *overrides(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TMPDIR": str(tmp_path)})  # the turn's file lives in TMPDIR
        deadline = time.time() + 240
        while not _has_open(proc.pid, turn):
            assert proc.poll() is None and time.time() < deadline, "the train never asked for the turn"
            time.sleep(0.05)
        time.sleep(2.0)  # long enough for a train that did not wait to allocate and write progress.csv
        assert proc.poll() is None and _has_open(proc.pid, turn) and _flock_holders(turn) == [holder.pid]
        assert not (Path(cfg["run_dir"]) / "progress.csv").exists()  # no state yet: it waits for the turn
        holder.communicate("go\n", timeout=10)  # the holder ends, and its turn with it
        progress = Path(cfg["run_dir"]) / "progress.csv"
        while not progress.exists():  # allocated: progress.csv is opened right after
            assert proc.poll() is None and time.time() < deadline, "the train ended or hung after its turn"
            time.sleep(0.05)
        assert proc.pid not in _flock_holders(turn) and not _has_open(proc.pid, turn)  # the turn was given back
        _, err = proc.communicate(timeout=240)
    finally:
        for p in (holder, proc):
            if p is not None and p.poll() is None:
                p.kill()
    assert proc.returncode == 0, err
    assert (Path(cfg["run_dir"]) / "checkpoints" / "step_0000001200").exists()


def test_a_train_refused_by_the_second_memory_check_can_be_tried_again(small, monkeypatch):
    """The memory is checked again inside the machine's turn, after config.json is written; a
    refusal there removes config.json, so the same train can be run again once memory is free."""
    from replaylab import api
    from replaylab.errors import ConfigError

    check, calls = api.check_memory, []

    def second_check_fails(trainer):
        calls.append(1)
        if len(calls) == 2:
            raise ConfigError("buffer_size=600: the run needs more memory than is available")
        check(trainer)

    monkeypatch.setattr(api, "check_memory", second_check_fails)
    cfg = small(total_steps=300, eval_interval=300)
    with pytest.raises(ConfigError, match="buffer_size=600"):
        replaylab.train(cfg)
    assert len(calls) == 2 and not (Path(cfg["run_dir"]) / "config.json").exists()
    run = replaylab.train(cfg)  # memory free again (the third and fourth checks pass)
    assert [r["env_step"] for r in run.progress][-1] == 300


COUNT_COMPILES_IN_THE_TURN = """
import contextlib, json, sys
from jax import monitoring
import replaylab
from replaylab import api

inside, compiles = [False], []
monitoring.register_event_duration_secs_listener(
    lambda name, secs, **kw: compiles.append(inside[0]) if name.endswith("backend_compile_duration") else None)
reserved = api.memory_reserved

@contextlib.contextmanager
def watched(trainer):
    with reserved(trainer):
        inside[0] = True
        try:
            yield
        finally:
            inside[0] = False

api.memory_reserved = watched
replaylab.train(json.loads(sys.argv[1]))
print(sum(compiles), len(compiles))
"""


def test_the_memory_turn_only_allocates_compiling_happens_before_it(small, tmp_path):
    """A cold process compiles the state's initialiser before it takes the machine's memory
    turn, so the turn lasts one allocation and cells' compiles overlap."""
    import json

    cfg = small(total_steps=300, eval_interval=300, seeds=2)
    r = subprocess.run([sys.executable, "-c", COUNT_COMPILES_IN_THE_TURN, json.dumps(cfg)], capture_output=True,
                       text=True, timeout=240, env={**os.environ, "REPLAYLAB_JAX_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    inside, total = map(int, r.stdout.split()[-2:])
    assert total > 5 and inside == 0, (inside, total)
