"""Environments behind one small interface.

Every environment takes actions in [-1, 1]^A (rescaled to its own bounds), returns flat
float32 observations, and separates a true terminal (``terminated``: do not bootstrap)
from a time-limit cut (``truncated``: bootstrap). Episodes are seeded explicitly at each
reset, which is what makes runs reproducible and resumable: an environment's state is a
function of its reset seed and the actions taken since.

Ids: any Gymnasium id with a Box action space (MuJoCo v5 included), or ``dmc:DOMAIN-TASK``
for the dm_control suite (``dmc:cheetah-run``, ``dmc:finger-turn_hard``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from replaylab.errors import ConfigError

DMC_PREFIX = "dmc:"


class Env(Protocol):
    obs_dim: int
    act_dim: int

    def reset(self, seed: int) -> np.ndarray: ...

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]: ...

    def render(self) -> np.ndarray: ...

    def close(self) -> None: ...


def make_env(env_id: str, action_repeat: int = 1, render: bool = False) -> Env:
    if env_id.startswith(DMC_PREFIX):
        from replaylab.envs.dmc import DMCEnv

        return DMCEnv(env_id[len(DMC_PREFIX):], action_repeat)
    from replaylab.envs.gym import GymEnv

    return GymEnv(env_id, action_repeat, render)


def check_env_id(env_id: str, action_repeat: int = 1) -> None:
    """Raise a one-line ConfigError if ``env_id`` cannot be trained on."""
    if env_id.startswith(DMC_PREFIX):
        from replaylab.envs.dmc import check_dmc_id

        check_dmc_id(env_id[len(DMC_PREFIX):])
        return
    from replaylab.envs.gym import check_gym_id

    check_gym_id(env_id)


__all__ = ["Env", "make_env", "check_env_id", "ConfigError"]
