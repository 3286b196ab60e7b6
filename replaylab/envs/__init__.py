"""Environments behind one small interface.

Every environment takes actions in [-1, 1]^A (rescaled to its own bounds), returns flat
float32 observations, and separates a true terminal (``terminated``: do not bootstrap)
from a time-limit cut (``truncated``: bootstrap). Episodes are seeded explicitly at each
reset, which is what makes runs reproducible and resumable: an environment's state is a
function of its reset seed and the actions taken since.

Ids: any Gymnasium id with a Box action space (MuJoCo v5 included), ``dmc:DOMAIN-TASK``
for the dm_control suite (``dmc:cheetah-run``, ``dmc:finger-turn_hard``), or ``meta:NAME``
for a task distribution (``meta:cheetah-vel``; ``replaylab envs`` lists them).

Every environment has ``tasks`` (None for a single task, else a ``TaskSet``), resets as
``reset(seed, task=0, switch_pool=None)`` and steps as ``step(action) -> (obs, reward,
terminated, truncated, extras)``, ``extras`` holding the declared columns of the transition
(``task`` and ``info`` for a task distribution, ``achieved_goal`` for a goal env, none
otherwise). ``extras`` may also hold quantities that are logged, not stored (``success``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from replaylab.errors import ConfigError

DMC_PREFIX = "dmc:"
META_PREFIX = "meta:"


class Env(Protocol):
    obs_dim: int
    act_dim: int
    tasks: object  # None, or a TaskSet
    goal: object  # None, or a goal.GoalSpec (goal envs, for HER)
    termination: object  # None, or the terminal rule on next observations in JAX (termination.py)

    def reset(self, seed: int, task: int = 0, switch_pool: np.ndarray | None = None) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]: ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


def is_meta(env_id: str) -> bool:
    return env_id.startswith(META_PREFIX)


def make_env(env_id: str, action_repeat: int = 1, render: bool = False, **task_settings) -> Env:
    """``task_settings`` (num_train, num_test, episode_length, change_steps, change_prob)
    configure a ``meta:`` task distribution; None means the family's default."""
    if is_meta(env_id):
        from replaylab.envs.meta import make_meta_env

        return make_meta_env(env_id[len(META_PREFIX):], **{k: v for k, v in task_settings.items() if v is not None})
    if env_id.startswith(DMC_PREFIX):
        from replaylab.envs.dmc import DMCEnv

        return DMCEnv(env_id[len(DMC_PREFIX):], action_repeat)
    from replaylab.envs.gym import GymEnv

    return GymEnv(env_id, action_repeat, render)


def env_columns(env: Env) -> dict:
    """The stored columns an environment declares beyond (s, a, r, s', terminated)."""
    import jax.numpy as jnp

    if env.goal is not None:
        return {"achieved_goal": ((env.goal.dim,), jnp.float32)}
    if env.tasks is None:
        return {}
    return {"task": ((), jnp.int32), "info": ((env.info_dim,), jnp.float32)}


def check_env_id(env_id: str, action_repeat: int = 1) -> bool:
    """Raise a one-line ConfigError if ``env_id`` cannot be trained on; else whether it is a
    goal env (HER can relabel it)."""
    if is_meta(env_id):
        from replaylab.envs.meta import FAMILIES

        name = env_id[len(META_PREFIX):]
        if name not in FAMILIES:
            raise ConfigError(f"env={env_id}: not a meta-environment; expected meta: followed by one of "
                              f"{', '.join(FAMILIES)} ('replaylab envs' lists them)")
        if action_repeat != 1:
            raise ConfigError(f"action_repeat={action_repeat}: meta-environments take action_repeat=1 "
                              "(their tasks are defined per step)")
        return False
    if env_id.startswith(DMC_PREFIX):
        from replaylab.envs.dmc import check_dmc_id

        check_dmc_id(env_id[len(DMC_PREFIX):])
        return False
    from replaylab.envs.gym import check_gym_id

    return check_gym_id(env_id)


__all__ = ["Env", "make_env", "check_env_id", "env_columns", "is_meta", "ConfigError"]
