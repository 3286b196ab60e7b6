"""Gymnasium adapter: Box actions rescaled from [-1, 1], flat float32 observations.

Goal envs (a dict observation with observation, achieved_goal and desired_goal, as in
gymnasium-robotics, whose ids are registered on first use) are adapted as ``goal.py``
says: the policy sees [observation, desired_goal], and ``goal`` describes the goal.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np

from replaylab.envs.termination import termination_rule
from replaylab.envs.goal import flat_obs, goal_spec, is_goal_space, register_robotics
from replaylab.errors import ConfigError


def _make(env_id: str, **kwargs) -> gym.Env:
    if env_id not in gym.registry:
        register_robotics()  # Fetch, Hand...: registered only when asked for
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(env_id, **kwargs)


def check_gym_id(env_id: str) -> bool:
    """One-line ConfigError unless ``env_id`` can be trained on; whether it is a goal env."""
    try:
        env = _make(env_id)
    except gym.error.Error as e:
        raise ConfigError(
            f"env={env_id}: not a Gymnasium id ({str(e).splitlines()[0].rstrip('.')}); "
            "dm_control tasks are written dmc:DOMAIN-TASK, e.g. dmc:cheetah-run") from None
    except Exception as e:  # missing optional deps of third-party envs, etc.
        raise ConfigError(f"env={env_id}: cannot be created: {type(e).__name__}: {e}") from None
    try:
        return _check_spaces(env_id, env) is not None
    finally:
        env.close()


def _check_spaces(env_id: str, env: gym.Env):
    """Raise a one-line ConfigError for spaces replaylab cannot train on; else the goal
    env's GoalSpec (None: not a goal env)."""
    if not isinstance(env.action_space, gym.spaces.Box):
        raise ConfigError(
            f"env={env_id}: action space is {env.action_space}; replaylab needs a continuous (Box) action space")
    if not np.all(np.isfinite(env.action_space.low)) or not np.all(np.isfinite(env.action_space.high)):
        raise ConfigError(f"env={env_id}: the Box action space must have finite bounds")
    if is_goal_space(env.observation_space):
        return goal_spec(env_id, env)  # raises for a goal env without a device reward or a time limit
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(
            f"env={env_id}: observation space is {type(env.observation_space).__name__}; a Box (or a goal dict "
            "with observation, achieved_goal and desired_goal) is needed")
    return None


class GymEnv:
    def __init__(self, env_id: str, action_repeat: int = 1, render: bool = False):
        self._env = _make(env_id, render_mode="rgb_array" if render else None)
        self.goal = _check_spaces(env_id, self._env)
        space = self._env.action_space
        self._low = space.low.astype(np.float64)
        self._high = space.high.astype(np.float64)
        self.act_dim = int(np.prod(space.shape))
        self._repeat = action_repeat
        observed = self._env.observation_space
        self.termination = termination_rule(env_id)
        if self.goal is not None:
            self.obs_dim = int(np.prod(observed["observation"].shape)) + self.goal.dim
        else:
            self.obs_dim = int(np.prod(observed.shape))

    tasks = None  # a single task

    def _obs(self, obs) -> np.ndarray:
        return flat_obs(obs) if self.goal is not None else np.asarray(obs, np.float32).reshape(-1)

    def reset(self, seed: int, task: int = 0, switch_pool=None) -> np.ndarray:
        obs, _ = self._env.reset(seed=int(seed))
        return self._obs(obs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        total = 0.0
        for _ in range(self._repeat):
            obs, reward, terminated, truncated, info = self._env.step(a.astype(np.float32))
            total += float(reward)
            if terminated or truncated:
                break
        extras = {}
        if self.goal is not None:  # the goal reached after the step (stored) and success (logged)
            extras = {"achieved_goal": np.asarray(obs["achieved_goal"], np.float32).reshape(-1),
                      "success": float(info.get("is_success", 0.0))}
        return self._obs(obs), total, bool(terminated), bool(truncated), extras

    def render(self) -> np.ndarray:
        return self._env.render()

    def close(self) -> None:
        self._env.close()
