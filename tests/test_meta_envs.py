"""Meta-RL environment families on their real dynamics (toy, point robots, Gymnasium v5 MuJoCo)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from replaylab.envs.meta import FAMILIES, family_table, make_meta_env
from replaylab.errors import ConfigError

NAMES = list(FAMILIES)
TOYS = [n for n, f in FAMILIES.items() if not f.mujoco]


def actions(env, n, seed=0):
    return np.random.default_rng(seed).uniform(-1.2, 1.2, (n, env.act_dim)).astype(np.float32)


def rollout(env, acts, seed, task, pool=None):
    """Stacked (obs, action, next_obs, info, reward, terminated, task) until a termination."""
    obs = env.reset(seed, task, pool)
    rows = []
    for a in acts:
        nxt, r, term, trunc, ex = env.step(a)
        rows.append((obs, a, nxt, ex["info"], r, term, ex["task"]))
        obs = nxt
        if term:
            break
    return [np.stack(col) for col in zip(*rows)]


def test_family_table_matches_the_envs():
    rows = {row["name"]: row for row in family_table()}
    assert set(rows) == set(NAMES) and len(NAMES) == 17
    for name, row in rows.items():
        env = make_meta_env(name)
        assert (row["obs_dim"], row["act_dim"], row["info_dim"]) == (env.obs_dim, env.act_dim, env.info_dim)
        assert (row["num_train"], row["num_test"], row["episode_length"]) == (
            env.tasks.num_train, env.tasks.num_test, env.episode_length)
        assert tuple(row["params"]) == env.tasks.names and "\n" not in row["description"]
        env.close()


@pytest.mark.parametrize("name", NAMES)
def test_reset_step_shapes_and_truncation(name):
    env = make_meta_env(name)
    obs = env.reset(seed=1, task=3 % env.tasks.num_train)
    assert obs.shape == (env.obs_dim,) and obs.dtype == np.float32 and np.isfinite(obs).all()
    steps = env.episode_length if name in TOYS else 30
    for i, a in enumerate(actions(env, steps)):
        obs, r, term, trunc, ex = env.step(a)
        assert obs.shape == (env.obs_dim,) and obs.dtype == np.float32 and np.isfinite(obs).all()
        assert isinstance(r, float) and np.isfinite(r) and isinstance(term, bool) and isinstance(trunc, bool)
        assert set(ex) == {"task", "info"} and ex["task"].dtype == np.int32 and ex["task"] == 3 % env.tasks.num_train
        assert ex["info"].shape == (env.info_dim,) and ex["info"].dtype == np.float32
        assert trunc == (i + 1 == env.episode_length)
        if term:
            break
    if name in TOYS:
        assert trunc and not term
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_task_sets_are_disjoint_and_counts_honoured(name):
    tasks = make_meta_env(name).tasks
    train, test = tasks.params[tasks.train_ids], tasks.params[tasks.test_ids]
    assert tasks.params.dtype == np.float32 and not tasks.params.flags.writeable
    shared = (train[:, None, :] == test[None, :, :]).all(-1).any()
    if name == "cheetah-dir":
        assert shared and tasks.params.ravel().tolist() == [-1, 1, -1, 1]
        with pytest.raises(ConfigError, match="exactly two tasks"):
            make_meta_env(name, num_train=5)
        return
    assert not shared and len(np.unique(tasks.params, axis=0)) == len(tasks.params)
    env = make_meta_env(name, num_train=7, num_test=3, episode_length=11)
    assert env.tasks.params.shape == (10, len(env.tasks.names)) and env.episode_length == 11
    assert env.tasks.train_ids.tolist() == list(range(7)) and env.tasks.test_ids.tolist() == [7, 8, 9]


@pytest.mark.parametrize("name", NAMES)
def test_reward_fn_recomputes_and_relabels(name):
    env = make_meta_env(name)
    acts = actions(env, 50, seed=2)
    a_task, b_task = 0, int(env.tasks.test_ids[-1])
    obs, act, nxt, info, rew, term, task = rollout(env, acts, seed=5, task=a_task)
    assert (task == a_task).all()
    fn = jax.jit(lambda o, a, n, i, p: env.reward_fn(jnp, o, a, n, i, p))
    params_a = np.broadcast_to(env.tasks.params[a_task], (len(rew), len(env.tasks.names)))  # per-row params
    r_a, t_a = fn(obs, act, nxt, info, params_a)
    np.testing.assert_allclose(np.asarray(r_a), rew, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(t_a), term)
    # same seed and actions under task B: same states, and B's rewards follow from A's stored data
    obs_b, _, nxt_b, _, rew_b, term_b, task_b = rollout(env, act, seed=5, task=b_task)
    assert (task_b == b_task).all() and np.array_equal(nxt_b, nxt)
    r_b, t_b = fn(obs, act, nxt, info, env.tasks.params[b_task])  # broadcast (P,) params
    np.testing.assert_allclose(np.asarray(r_b), rew_b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(t_b), term_b)
    if "sparse" not in name:  # (random actions rarely get within a sparse radius: see test_reward_formulas)
        assert not np.allclose(rew_b, rew)


def test_toy1d_is_smrls_factory():
    """SMRL's toy1d: goals in [0.1, 10] and positions clipped to [0.1, 10] from a start at 0;
    toy1d-twosided keeps [-10, 10] for both."""
    env = make_meta_env("toy1d")
    goals = env.tasks.params[:, 0]
    assert goals.min() >= 0.1 and goals.max() <= 10.0
    assert env.reset(0, 0)[0] == 0.0
    nxt, r, *_ = env.step(np.array([-1.0], np.float32))  # into the wall at 0.1
    assert nxt[0] == pytest.approx(0.1) and r == pytest.approx(-(goals[0] - 0.1), abs=1e-5)
    two = make_meta_env("toy1d-twosided")
    two.reset(0, 0)
    assert two.step(np.array([-1.0], np.float32))[0][0] == pytest.approx(-1.0)
    assert two.tasks.params.min() < 0 < two.tasks.params.max()


def _info(env, **values):
    layout = {1: ["x"], 2: ["x", "y"], 3: ["x", "vx", "asq"], 7: ["x", "y", "z", "vx", "vy", "asq", "contact"]}
    return np.array([values.get(k, 0.5 if k == "z" else 0.0) for k in layout[env.info_dim]], np.float32)


@pytest.mark.parametrize("name, params, info, reward", [
    ("toy1d-twosided", [2.0], dict(x=-1.0), -3.0),
    ("toy1d", [2.0], dict(x=0.5), -1.5),
    ("toy2d", [3.0, 0.0], dict(x=0.0, y=4.0), -5.0),
    ("toy1d-sparse", [5.0], dict(x=5.75), 0.25),
    ("toy1d-sparse", [5.0], dict(x=3.9), 0.0),
    ("sparse-point-robot", [0.0, 1.0], dict(x=0.1, y=1.0), 0.9),
    ("sparse-point-robot", [0.0, 1.0], dict(x=0.3, y=1.0), 0.0),
    ("cheetah-vel", [2.0], dict(vx=1.5, asq=2.0), -0.5 - 0.1),
    ("cheetah-dir", [-1.0], dict(vx=1.5, asq=2.0), -1.5 - 0.1),
    ("cheetah-goal", [3.0], dict(x=5.0, asq=2.0), -2.0 - 0.1),
    ("cheetah-vel-sparse", [2.0], dict(vx=1.95, asq=2.0), 1.95 - 1.0),
    ("cheetah-vel-sparse", [2.0], dict(vx=1.85, asq=2.0), -2.0 - 1.0),
    ("cheetah-goal-sparse", [3.0], dict(x=3.4, asq=2.0), 1.6 - 0.1),
    ("ant-vel", [2.0], dict(vx=1.5, asq=2.0, contact=0.25), -0.5 - 1.0 - 0.25 + 1),
    ("ant-dir", [np.pi / 2], dict(vx=1.5, vy=-0.5, asq=2.0), -0.5 - 1.0 + 1),
    ("ant-goal", [1.0, -1.0], dict(x=2.0, y=1.0, asq=2.0), -3.0 - 0.2),  # no survive bonus (PEARL)
    ("ant-vel-sparse", [2.0], dict(vx=1.75, asq=2.0), 1.75 - 1.0 + 1),
    ("ant-goal-sparse", [0.5, -0.5], dict(x=0.9, y=-0.6, asq=2.0), 4 - 0.5 - 0.2 + 1),
    ("ant-goal-sparse", [0.5, -0.5], dict(x=1.5, y=-0.5, asq=2.0), 4 - 1.0 - 0.2 + 1),
])
def test_reward_formulas(name, params, info, reward):
    cls = FAMILIES[name].make
    r, term = cls.reward_fn(np, None, None, None, _info(cls, **info), np.float32(params))
    assert r == pytest.approx(reward, abs=1e-5) and not term


def test_ant_terminates_outside_the_healthy_height():
    cls = FAMILIES["ant-vel"].make
    info = np.stack([_info(cls, z=z) for z in (0.1, 0.2, 0.5, 1.0, 1.1, np.nan)])
    _, term = cls.reward_fn(np, None, None, None, info, np.float32([1.0]))
    assert term.tolist() == [True, False, False, False, True, True]


@pytest.mark.parametrize("name", ["point-robot", "cheetah-vel"])
def test_episodes_are_a_function_of_the_reset_seed(name):
    env = make_meta_env(name, change_steps=5, change_prob=0.5)
    acts = actions(env, 40)
    first = rollout(env, acts, seed=9, task=1)
    again = rollout(env, acts, seed=9, task=1)
    other = rollout(env, acts, seed=10, task=1)
    for x, y in zip(first, again):
        assert np.array_equal(x, y)
    assert not np.array_equal(first[2], other[2])


def test_in_episode_switches_come_from_the_pool_and_are_reported():
    env = make_meta_env("point-robot", change_steps=5, change_prob=0.5, episode_length=400)
    pool = env.tasks.test_ids[:4]
    acts = actions(env, 400)
    obs, act, nxt, info, rew, term, task = rollout(env, acts, seed=3, task=0, pool=pool)
    assert len(task) == 400 and (task[:5] == 0).all()
    switch = np.flatnonzero(task[1:] != task[:-1]) + 1
    assert len(switch) > 10 and set(task[switch]) <= set(pool.tolist())
    runs = np.diff(np.concatenate([[0], switch]))  # (the last run is cut by the episode's end)
    assert runs.min() >= 5 and runs.max() > 6  # at least change_steps per task; change_prob < 1 delays some
    # each reward was computed with the task reported for that transition
    r, _ = env.reward_fn(np, obs, act, nxt, info, env.tasks.params[task])
    np.testing.assert_array_equal(r.astype(np.float32), rew.astype(np.float32))
    assert np.array_equal(rollout(env, acts, seed=3, task=0, pool=pool)[-1], task)
    assert not np.array_equal(rollout(env, acts, seed=4, task=0, pool=pool)[-1], task)
    # default pool: the train ids; change_steps=0: no switches
    assert set(rollout(env, acts, seed=3, task=0)[-1]) <= set(env.tasks.train_ids.tolist())
    still = make_meta_env("point-robot", episode_length=400)
    assert (rollout(still, acts, seed=3, task=2, pool=pool)[-1] == 2).all()


@pytest.mark.parametrize("name, gym_id", [("cheetah-vel", "HalfCheetah-v5"), ("ant-goal", "Ant-v5")])
def test_mujoco_dynamics_match_gymnasium_v5(name, gym_id):
    import gymnasium as gym

    env = make_meta_env(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = gym.make(gym_id).unwrapped
    env.reset(4)
    ref.reset(seed=4)
    for a in np.clip(actions(env, 25), -1, 1):
        _, _, _, _, ex = env.step(a)
        _, _, _, _, ref_info = ref.step(a)
        assert np.array_equal(env.data.qpos, ref.data.qpos) and np.array_equal(env.data.qvel, ref.data.qvel)
        assert ex["info"][-1 if name == "ant-goal" else 1] == pytest.approx(
            -ref_info["reward_contact"] if name == "ant-goal" else ref_info["x_velocity"], rel=1e-5, abs=1e-6)
    ref.close()


def test_unknown_family_and_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown meta-RL family"):
        make_meta_env("cheetah-jump")
    with pytest.raises(ConfigError, match="num_test"):
        make_meta_env("toy1d", num_test=0)
    with pytest.raises(ConfigError, match="change_prob"):
        make_meta_env("toy1d", change_prob=1.5)


def test_render_mujoco_frames_and_no_renderer_for_toys():
    with pytest.raises(NotImplementedError):
        make_meta_env("toy1d").render()
    env = make_meta_env("cheetah-dir")
    env.reset(0)
    try:
        frame = env.render()
    except Exception as e:  # no OpenGL backend on this machine
        pytest.skip(f"no MuJoCo renderer: {type(e).__name__}: {e}")
    finally:
        env.close()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
