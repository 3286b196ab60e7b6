"""The CLI as a user runs it, and what a run writes (CSV, TensorBoard, wandb offline)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import replaylab
from replaylab.training.logs import read_progress
from tests.conftest import cli, overrides


def test_train_then_eval_through_the_cli(small):
    cfg = small(seeds=2, tensorboard=True, env="dmc:cartpole-balance", action_repeat=4, total_steps=300,
                warmup_steps=100, eval_interval=150)
    r = cli("train", *overrides(cfg))
    assert r.returncode == 0, r.stderr
    assert "final return (mean over 2 seeds)" in r.stdout and f"run directory: {cfg['run_dir']}" in r.stdout
    run_dir = Path(cfg["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == "dmc:cartpole-balance" and config["agent.hidden_sizes"] == [16, 16]
    assert config["replaylab_version"] == replaylab.__version__ and "git_commit" in config
    rows = read_progress(run_dir / "progress.csv")
    assert [(r["env_step"], r["seed"]) for r in rows] == [(150, 0), (150, 1), (300, 0), (300, 1)]
    assert all(0 <= r["return_mean"] <= 1000 and r["sps"] > 0 for r in rows)
    assert {"critic_loss", "temperature", "updates"} <= rows[-1].keys()
    assert _tensorboard_tags(run_dir) >= {"eval/return", "train/critic_loss"}

    r = cli("eval", cfg["run_dir"], "--episodes", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("over 2 episodes") == 2


def test_eval_video_needs_a_renderer_or_says_so(small, tmp_path):
    cfg = small(total_steps=200, warmup_steps=200, eval_interval=200, env="dmc:cartpole-balance", action_repeat=8)
    replaylab.train(cfg)
    video = tmp_path / "v.gif"
    r = cli("eval", cfg["run_dir"], "--episodes", "1", "--video", str(video))
    if r.returncode == 0:
        assert video.stat().st_size > 0
    else:
        assert r.returncode == 1 and "no renderer is available" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_train_refuses_to_overwrite_a_run(small):
    cfg = small(total_steps=200, warmup_steps=200, eval_interval=200)
    replaylab.train(cfg)
    r = cli("train", *overrides(cfg))
    assert r.returncode == 2 and "already holds a run" in r.stderr


def test_wandb_offline(small, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = small(total_steps=200, warmup_steps=100, eval_interval=100, wandb=True, wandb_mode="offline")
    replaylab.train(cfg)
    offline = list((Path(cfg["run_dir"]) / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))


def _tensorboard_tags(run_dir: Path) -> set[str]:
    """Read scalar tags from the TFRecord event files with tensorboardX's own protos."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            tags.update(v.tag for v in event.summary.value)
            i += 12 + n + 4
    return tags


def test_tensorboard_gets_no_point_for_a_value_that_was_not_measured(tmp_path, caplog):
    from replaylab.training.logs import Loggers

    logs = Loggers(tmp_path, {}, tensorboard=True, wandb=False, wandb_mode="offline", wandb_project="x")
    logs.scalars(100, {"eval/train_return_last": float("nan"), "eval/return": -3.5})  # no train tasks evaluated
    logs.close()
    assert _tensorboard_tags(tmp_path) == {"eval/return"}
    assert not [r for r in caplog.records if "NaN" in r.getMessage()]  # tensorboardX warned per evaluation


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from replaylab.training import checkpoint

    path = tmp_path / "curves.png"
    path.write_bytes(b"old")

    def disk_full(*_):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", disk_full)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]
