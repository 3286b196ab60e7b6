"""Environment adapters on real Gymnasium MuJoCo and dm_control tasks."""

from __future__ import annotations

import numpy as np
import pytest

from replaylab.envs import make_env
from replaylab.errors import ConfigError


def test_dmc_adapter_flattens_rescales_and_truncates():
    env = make_env("dmc:cheetah-run")
    assert (env.obs_dim, env.act_dim) == (17, 6)
    obs = env.reset(seed=3)
    assert obs.shape == (17,) and obs.dtype == np.float32
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (1000, 6)).astype(np.float32)
    total, steps = 0.0, 0
    for a in actions:
        obs, r, terminated, truncated, _ = env.step(a)
        total += r
        steps += 1
        assert 0.0 <= r <= 1.0
        if terminated or truncated:
            break
    # dm_control's 1000-step limit is a truncation (discount 1): bootstrap through it
    assert steps == 1000 and truncated and not terminated
    # same seed, same actions: same episode
    env2 = make_env("dmc:cheetah-run")
    obs2 = env2.reset(seed=3)
    total2 = sum(env2.step(a)[1] for a in actions)
    assert total2 == pytest.approx(total, abs=0)


def test_dmc_action_repeat_shortens_episodes_and_sums_rewards():
    env = make_env("dmc:cartpole-swingup", action_repeat=4)
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.zeros(env.act_dim, np.float32))
        assert 0.0 <= r <= 4.0
        steps += 1
        done = term or trunc
    assert steps == 250


def test_dmc_reset_seed_controls_the_initial_state():
    env = make_env("dmc:cartpole-swingup")
    a, b, c = env.reset(seed=1), env.reset(seed=1), env.reset(seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_gym_actions_are_rescaled_from_unit_box():
    env = make_env("Pendulum-v1")  # torque bounds are [-2, 2]
    env.reset(seed=0)
    inner = env._env.unwrapped
    env.step(np.array([1.0], np.float32))
    assert inner.last_u == pytest.approx(2.0)
    env.step(np.array([-0.5], np.float32))
    assert inner.last_u == pytest.approx(-1.0)


def test_gym_termination_and_truncation_are_separated():
    hopper = make_env("Hopper-v5")
    hopper.reset(seed=0)
    for _ in range(1000):
        _, _, terminated, truncated, _ = hopper.step(np.ones(3, np.float32))
        if terminated or truncated:
            break
    assert terminated and not truncated  # it falls over long before the time limit
    pendulum = make_env("Pendulum-v1")
    pendulum.reset(seed=0)
    flags = [pendulum.step(np.zeros(1, np.float32))[2:4] for _ in range(200)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])


def test_unknown_and_discrete_envs_are_rejected():
    with pytest.raises(ConfigError, match="Discrete"):
        make_env("CartPole-v1")
    with pytest.raises(ConfigError, match="not a dm_control suite task"):
        make_env("dmc:walker-fly")
