"""Evaluation on non-stationary tasks: returns split at the first in-episode task switch,
the switch columns, the time-response trace and plot, and the class panel of the encodings."""

from __future__ import annotations

import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import replaylab
from replaylab.config import from_flat
from replaylab.envs import make_env
from replaylab.replay.storage import Transition
from replaylab.training.evaluate import (EVAL_STREAM, SWITCH_COLUMNS, AdaptationEval, EvalResult, SingleTaskEval,
                                         episode_seed, evaluate)
from replaylab.training.figures import encodings_figure, response_figure

ACTION = 0.4  # every fake-policy action: toy1d's position after t steps is min(0.4 t, 10)


class FakeLearner:
    """The learner's evaluation interface with a constant policy; with ``beliefs`` the
    belief counts the transitions observed since the episode began, and belief_stats give
    that count as z's mean and its value mod 3 as a class."""

    def __init__(self, beliefs: bool):
        self.beliefs = beliefs
        self.inference = self

    def eval_beliefs(self, seeds, n):
        return {"n": jnp.zeros((seeds, n), jnp.int32)} if self.beliefs else ()

    def policy(self, state, beliefs, obs):
        return np.full(obs.shape, ACTION, np.float32)

    def eval_begin(self, state, beliefs, new_task, prior, keys):
        return {"n": jnp.zeros_like(beliefs["n"])}

    def eval_observe(self, state, beliefs, tr: Transition, active):
        return {"n": beliefs["n"] + jnp.asarray(active, jnp.int32)}

    @staticmethod
    def belief_stats(b):
        return {"mean": b["n"][None].astype(jnp.float32), "var": jnp.ones((1,)), "class": b["n"] % 3}

    def eval_stats(self, beliefs):
        return jax.vmap(jax.vmap(self.belief_stats))(beliefs)


def _envs(seeds, n, change_steps):
    return [[make_env("meta:toy1d", num_train=4, num_test=3, episode_length=50, change_steps=change_steps)
             for _ in range(n)] for _ in seeds]


def _reference(env, seed, round_, j, k, task, pool):
    """Step one episode by hand: (return, return before the first switch, tasks of the steps)."""
    extra = (k,) if k else ()
    env.reset(episode_seed(seed, EVAL_STREAM, round_, j, *extra), task, pool)
    rewards, step_tasks = [], []
    done = False
    while not done:
        _, r, terminated, truncated, ex = env.step(np.full(env.act_dim, ACTION, np.float32))
        rewards.append(r)
        step_tasks.append(int(ex["task"]))
        done = terminated or truncated
    rewards, step_tasks = np.array(rewards), np.array(step_tasks)
    first = np.nonzero(step_tasks != task)[0]
    cut = first[0] if len(first) else len(rewards)
    return rewards.sum(), rewards[:cut].sum(), step_tasks


@pytest.mark.parametrize("change_steps", [20, 0])
def test_returns_split_at_the_first_switch_add_up_to_the_episode_return(change_steps):
    seeds, tasks = [3, 4], np.array([4, 5, 6])
    pools = [np.arange(4, 7)] * 3
    envs = _envs(seeds, 3, change_steps)
    res = evaluate(FakeLearner(False), None, envs, seeds, 2, tasks, episodes=2, switch_pools=pools)
    assert isinstance(res, EvalResult) and res.returns.shape == res.switched.shape == (2, 3, 2)
    np.testing.assert_allclose(res.before_switch + res.after_switch, res.returns, rtol=1e-12)
    ref_env = _envs([0], 1, change_steps)[0][0]
    for i, s in enumerate(seeds):
        for j, task in enumerate(tasks):
            for k in range(2):
                total, before, step_tasks = _reference(ref_env, s, 2, j, k, int(task), pools[j])
                assert res.returns[i, j, k] == pytest.approx(total)
                assert res.before_switch[i, j, k] == pytest.approx(before)
                # toy1d switches every 20 steps with change_prob 1, always to another task of the pool
                assert res.switched[i, j, k] == bool(change_steps) == (step_tasks[20] != task)
    if not change_steps:
        assert not res.after_switch.any() and np.array_equal(res.before_switch, res.returns)
    assert res.trace is None and res.stats is None  # no inference: no beliefs to summarise


def test_the_trace_follows_the_response_the_active_target_and_the_belief(tmp_path):
    envs = _envs([7], 3, 20)
    tasks = np.array([4, 5, 6])
    res = evaluate(FakeLearner(True), None, envs, [7], 0, tasks, episodes=2, switch_pools=[np.arange(4, 7)] * 3,
                   trace=(2, 0))
    tr = res.trace
    assert tr.envs == [2, 0] and tr.label == "position" and tr.param == "goal"
    params = envs[0][0].tasks.params[:, 0]
    steps = np.arange(1, 51)
    for c, j in enumerate(tr.envs):
        np.testing.assert_allclose(tr.response[c], np.minimum(ACTION * steps, 10.0), rtol=1e-5)  # s' = clip(s + a)
        assert tr.task[c][0] == tasks[j] and tr.task[c][20] != tasks[j]  # the first switch is at step 21
        assert (np.diff(tr.task[c]) != 0).sum() == 2  # and the second at step 41
        np.testing.assert_array_equal(tr.target[c], params[tr.task[c]])
        np.testing.assert_array_equal(tr.z_mean[c][:, 0], steps)  # observed transitions of the last episode
        np.testing.assert_array_equal(tr.z_class[c], steps % 3)
    path = response_figure(tmp_path / "response" / "step_1.png", tr, tasks, "seed 7")
    _assert_png(path)
    enc = encodings_figure(tmp_path / "enc.png", ("goal",), envs[0][0].tasks.params[4:], np.zeros((3, 2)),
                           np.ones((3, 2)), "seed 7", classes=np.array([0, 2, 1]))
    _assert_png(enc)


@pytest.mark.parametrize("width", [1, 2])
def test_a_narrow_pool_of_environments_evaluates_every_slot_as_a_full_one(width):
    """Evaluation in waves over ``width`` environments per seed (reset between episodes)
    gives the returns, switches, final beliefs and trace of one environment per slot: seeds
    and belief keys belong to the slot, not to the environment that runs it."""
    seeds, tasks, pools = [3, 4], np.array([4, 5, 6]), [np.arange(4, 7)] * 3
    full, narrow = (evaluate(FakeLearner(True), None, _envs(seeds, n, 20), seeds, 2, tasks, episodes=2,
                             switch_pools=pools, trace=(2, 0)) for n in (3, width))
    for name in ("returns", "before_switch", "after_switch", "switched"):
        np.testing.assert_array_equal(getattr(narrow, name), getattr(full, name))
    assert narrow.returns.shape == (2, 3, 2) and full.switched.any()
    for name in full.stats:
        np.testing.assert_array_equal(narrow.stats[name], full.stats[name])
    assert narrow.trace.envs == full.trace.envs == [2, 0]
    for field in ("response", "target", "task", "z_mean", "z_class"):
        for a, b in zip(getattr(narrow.trace, field), getattr(full.trace, field)):
            np.testing.assert_array_equal(a, b)


def test_switch_columns_average_only_the_switched_last_episodes():
    task_set = make_env("meta:toy1d", num_train=4, num_test=3).tasks
    plain = AdaptationEval(task_set, 1, 2, 1)
    switching = AdaptationEval(task_set, 1, 2, 1, switches=True)
    assert SingleTaskEval(3).columns == ()
    assert plain.columns == AdaptationEval.columns == ("test_return_first", "test_return_last",
                                                      "train_return_first", "train_return_last")
    assert switching.columns == plain.columns + SWITCH_COLUMNS
    assert len(switching.trace_envs) == 3 and sorted(switching.trace_envs) == [0, 1, 2]
    shape = (2, 4, 2)  # seeds, 3 test tasks + 1 train task, episodes
    before = np.arange(16, dtype=float).reshape(shape)
    after = np.full(shape, -1.0)
    switched = np.zeros(shape, bool)
    switched[0, [0, 2, 3], -1] = True  # seed 0: test tasks 0 and 2 (and the train task) switched; seed 1: none
    after[~switched] = 0.0
    res = EvalResult(before + after, before, after, switched)
    out = switching.summary(res)
    assert out["test_return_before_switch"][0] == pytest.approx((before[0, 0, 1] + before[0, 2, 1]) / 2)
    assert out["test_return_after_switch"][0] == pytest.approx(-1.0)
    assert np.isnan(out["test_return_before_switch"][1]) and np.isnan(out["test_return_after_switch"][1])
    assert set(SWITCH_COLUMNS).isdisjoint(plain.summary(res))
    assert out["test_return_last"] == pytest.approx(plain.summary(res)["test_return_last"])


# -- a tiny real run --------------------------------------------------------------------------------

RUN = {"env": "meta:toy1d", "inference": "pearl", "total_steps": 200, "warmup_steps": 100, "eval_interval": 200,
       "checkpoint_interval": 0, "buffer_size": 1000, "batch_size": 8, "meta_batch": 2, "train_tasks": 4,
       "test_tasks": 3, "eval_train_tasks": 1, "prior_episodes": 1, "extra_episodes": 1, "adapt_episodes": 2,
       "episode_length": 40, "change_steps": 20, "progress_bar": False, "tensorboard": False,
       "agent.hidden_sizes": [8, 8], "inference.encoder_sizes": [8], "inference.context_size": 4,
       "inference.latent_dim": 2}


@pytest.fixture(scope="module")
def switching_run(tmp_path_factory):
    return replaylab.train({**RUN, "run_dir": str(tmp_path_factory.mktemp("switch") / "run")})


def _assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100 and data.endswith(b"IEND\xaeB`\x82")


def test_a_switching_run_writes_a_response_plot_with_each_evaluation(switching_run, capsys):
    run_dir = switching_run.run_dir
    pngs = sorted((run_dir / "response").iterdir())
    assert [p.name for p in pngs] == ["step_0000000200.png"]
    for p in pngs + sorted((run_dir / "encodings").iterdir()):
        _assert_png(p)
    assert not list(run_dir.rglob(".*.tmp-*"))  # written atomically
    # the eval command's report of a switching run
    from replaylab.cli import _print_eval

    shape = (1, 4, 2)
    switched = np.zeros(shape, bool)
    switched[0, :2, -1] = True
    _print_eval(str(run_dir), EvalResult(np.full(shape, -3.0), np.full(shape, -1.0), np.full(shape, -2.0),
                                         switched), None)
    out = capsys.readouterr().out
    assert "last episode -3.0" in out and "task switch: 2 of 3" in out and "before the first switch -1.0" in out


def test_run_columns_are_unchanged_without_switches(tmp_path):
    from replaylab.training.loop import Trainer

    still = Trainer(from_flat({**RUN, "change_steps": 0}), tmp_path / "a").columns
    assert set(SWITCH_COLUMNS).isdisjoint(still)
    assert still[9:13] == ["test_return_first", "test_return_last", "train_return_first", "train_return_last"]
    single = Trainer(from_flat({"env": "Pendulum-v1"}), tmp_path / "b").columns
    assert set(SWITCH_COLUMNS).isdisjoint(single) and "test_return_first" not in single


def test_a_switching_run_logs_the_returns_before_and_after_the_switch(switching_run):
    row = switching_run.progress[-1]
    for col in SWITCH_COLUMNS:
        assert np.isfinite(row[col]), col  # every test task's last episode switches at step 21
    assert row["test_return_before_switch"] + row["test_return_after_switch"] == \
        pytest.approx(row["test_return_last"], rel=1e-9)
    lines = (switching_run.run_dir / "tasks.csv").read_text().splitlines()
    assert lines[0].split(",")[-4:] == ["return_1", "return_before_switch", "return_after_switch", "switched"]
    for line in lines[1:]:
        last, before, after, switched = line.split(",")[-4:]
        assert switched == "1" and float(before) + float(after) == pytest.approx(float(last), rel=1e-9)
