"""Half-cheetah task families (PEARL ``rlkit/envs/half_cheetah_*.py``, DMRLAD ``sparse_envs``).

Observation (20): qpos[1:] (8), qvel (9), torso position xyz (3), as PEARL / DMRLAD.
info (3): x after the step, v_x = (x_after - x_before) / dt of the root, |a|^2 of the applied
action. Never terminates. Deviation: tasks split from one seed-1337 draw (disjoint train/test).
"""

from __future__ import annotations

import numpy as np

from replaylab.envs.meta.base import TaskSet, no_termination, register
from replaylab.envs.meta.mujoco_env import MujocoMetaEnv, TargetVelocity
from replaylab.errors import ConfigError

X, VX, ASQ = range(3)  # info layout


class Cheetah(MujocoMetaEnv):
    """Shared half-cheetah: reward = task term (sparsified when ``radius`` is set) - ctrl_weight |a|^2."""

    xml = "half_cheetah.xml"
    obs_dim, act_dim, info_dim = 20, 6, 3
    vx = VX
    ctrl_weight = 0.05
    response = ("v_x", lambda obs, info: info[..., VX], 0)  # against the target velocity / direction

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._torso = self.model.body("torso").id

    def _observe(self) -> np.ndarray:
        d = self.data
        return np.concatenate((d.qpos[1:], d.qvel, d.xpos[self._torso]), dtype=np.float32)

    def _advance(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0 = self.data.qpos[0]
        self._simulate(a)
        x = self.data.qpos[0]
        return self._observe(), np.array((x, (x - x0) / self.dt, a @ a), np.float32)

    @classmethod
    def reward_fn(cls, xp, obs, action, next_obs, info, params):
        reward = cls.task_term(xp, info, params) - cls.ctrl_weight * info[..., ASQ]
        return reward, no_termination(xp, reward)


@register("cheetah-vel", num_train=100, num_test=30, episode_length=200, mujoco=True)
class CheetahVel(TargetVelocity, Cheetah):
    """PEARL cheetah-vel: target velocity v* ~ U(0, 3); r = -|v_x - v*| - 0.05 |a|^2."""


@register("cheetah-dir", num_train=2, num_test=2, episode_length=200, mujoco=True)
class CheetahDir(Cheetah):
    """PEARL cheetah-dir: direction in {-1, +1}; r = dir v_x - 0.05 |a|^2; the one family whose train and test tasks cannot be disjoint (both are {-1, +1})."""

    param_names = ("direction",)

    @classmethod
    def make_tasks(cls, num_train: int, num_test: int) -> TaskSet:
        if (num_train, num_test) != (2, 2):
            raise ConfigError(f"train_tasks={num_train}, test_tasks={num_test}: env=meta:cheetah-dir has exactly "
                              "two tasks (-1, +1), used for train and test alike; expected 2 and 2")
        return TaskSet(cls.param_names, [[-1.0], [1.0], [-1.0], [1.0]], 2, 2)

    @classmethod
    def task_reward(cls, xp, info, params):
        return params[..., 0] * info[..., VX]


@register("cheetah-goal", num_train=100, num_test=30, episode_length=200, mujoco=True)
class CheetahGoal(Cheetah):
    """Cheetah-goal (DMRLAD's range): goal x ~ U(1, 6); r = -|x - g| - 0.05 |a|^2."""

    param_names = ("goal_x",)
    param_low, param_high = 1.0, 6.0
    response = ("x", lambda obs, info: info[..., X], 0)

    @classmethod
    def task_reward(cls, xp, info, params):
        return -xp.abs(info[..., X] - params[..., 0])


@register("cheetah-vel-sparse", num_train=100, num_test=30, episode_length=200, mujoco=True)
class CheetahVelSparse(CheetahVel):
    """DMRLAD cheetah-vel-sparse: v* ~ U(0, 3); r = sparsify(-|v_x - v*|, 0.1) - 0.5 |a|^2."""

    radius, ctrl_weight = 0.1, 0.5


@register("cheetah-goal-sparse", num_train=100, num_test=30, episode_length=200, mujoco=True)
class CheetahGoalSparse(CheetahGoal):
    """DMRLAD cheetah-goal-sparse: goal x ~ U(1, 6); r = sparsify(-|x - g|, 0.5) - 0.05 |a|^2."""

    radius = 0.5
