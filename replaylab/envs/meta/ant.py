"""Ant task families (PEARL ``rlkit/envs/ant_*.py``, DMRLAD ``sparse_envs``).

Observation (29): qpos (15, torso x and y included) and qvel (14); no contact forces.
info (7): torso x, y and z after the step, v_x, v_y (root displacement / dt), |a|^2 of the
applied action, contact cost 5e-4 sum(clip(cfrc_ext, -1, 1)^2).
Reward: task term - ctrl_weight |a|^2 - contact cost + survive (1; 0 for ant-goal, as in
PEARL); terminates when the torso z leaves [0.2, 1.0] (PEARL). Deviations: tasks split from
one seed-1337 draw (disjoint train/test); DMRLAD's ant-vel-sparse used a 30-d observation and
z range [0.3, 10].
"""

from __future__ import annotations

import numpy as np

from replaylab.envs.meta.base import register
from replaylab.envs.meta.mujoco_env import MujocoMetaEnv, TargetVelocity

X, Y, Z, VX, VY, ASQ, CONTACT = range(7)  # info layout


class Ant(MujocoMetaEnv):
    """Shared ant: reward = task term (sparsified when ``radius`` is set) - ctrl - contact + 1."""

    terminates = True

    xml = "ant.xml"
    obs_dim, act_dim, info_dim = 29, 8, 7
    vx = VX
    response = ("v_x", lambda obs, info: info[..., VX], 0)  # against the target velocity
    contact_forces = True
    ctrl_weight = 0.5
    contact_weight = 5e-4
    survive = 1.0
    healthy_z = (0.2, 1.0)

    def _observe(self) -> np.ndarray:
        return np.concatenate((self.data.qpos, self.data.qvel), dtype=np.float32)

    def _advance(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = self.data
        x0, y0 = d.qpos[0], d.qpos[1]
        self._simulate(a)
        x, y, z = d.qpos[:3]
        contact = self.contact_weight * np.sum(np.square(np.clip(d.cfrc_ext, -1.0, 1.0)))
        info = np.array((x, y, z, (x - x0) / self.dt, (y - y0) / self.dt, a @ a, contact), np.float32)
        return self._observe(), info

    @classmethod
    def reward_fn(cls, xp, obs, action, next_obs, info, params):
        reward = cls.task_term(xp, info, params) - cls.ctrl_weight * info[..., ASQ] - info[..., CONTACT] + cls.survive
        z = info[..., Z]
        healthy = (z >= cls.healthy_z[0]) & (z <= cls.healthy_z[1])  # False for NaN
        return reward, xp.broadcast_to(xp.logical_not(healthy), xp.shape(reward))

    @staticmethod
    def xy_offset(xp, info, params):
        return info[..., X:Y + 1] - params[..., :2]


class DiscGoals:
    """Goals g = r (cos a, sin a) with a ~ U(0, 2 pi) and r = max_radius sqrt(U) (uniform over the disc)."""

    param_names = ("goal_x", "goal_y")
    max_radius: float
    response = ("x", lambda obs, info: info[..., X], 0)  # against the goal's x

    @classmethod
    def sample_params(cls, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random((n, 2))
        angle, radius = 2 * np.pi * u[:, 0], cls.max_radius * np.sqrt(u[:, 1])
        return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)


@register("ant-vel", num_train=100, num_test=30, episode_length=200, mujoco=True)
class AntVel(TargetVelocity, Ant):
    """Ant-vel (dense form of DMRLAD ant-vel-sparse): v* ~ U(0, 3); r = -|v_x - v*| - 0.5 |a|^2 - contact + 1."""


@register("ant-dir", num_train=100, num_test=30, episode_length=200, mujoco=True)
class AntDir(Ant):
    """PEARL ant-dir: angle t ~ U(0, 2 pi); r = v_xy . (cos t, sin t) - 0.5 |a|^2 - contact + 1."""

    param_names = ("angle",)
    param_low, param_high = 0.0, 2 * np.pi
    response = ("heading of v_xy (rad)",
                lambda obs, info: np.mod(np.arctan2(info[..., VY], info[..., VX]), 2 * np.pi), 0)

    @classmethod
    def task_reward(cls, xp, info, params):
        angle = params[..., 0]
        return info[..., VX] * xp.cos(angle) + info[..., VY] * xp.sin(angle)


@register("ant-goal", num_train=150, num_test=30, episode_length=200, mujoco=True)
class AntGoal(DiscGoals, Ant):
    """PEARL ant-goal: goal uniform in the radius-3 disc; r = -|xy - g|_1 - 0.1 |a|^2 - contact."""

    max_radius = 3.0
    ctrl_weight = 0.1
    survive = 0.0

    @classmethod
    def task_reward(cls, xp, info, params):
        return -xp.sum(xp.abs(cls.xy_offset(xp, info, params)), axis=-1)


@register("ant-vel-sparse", num_train=100, num_test=30, episode_length=200, mujoco=True)
class AntVelSparse(AntVel):
    """DMRLAD ant-vel-sparse: v* ~ U(0, 3); r = sparsify(-|v_x - v*|, 0.3) - 0.5 |a|^2 - contact + 1."""

    radius = 0.3


@register("ant-goal-sparse", num_train=150, num_test=30, episode_length=200, mujoco=True)
class AntGoalSparse(DiscGoals, Ant):
    """DMRLAD ant-goal-sparse: goal in the unit disc; r = 4 - (|xy - g|_1 if |xy - g|_2 <= 0.8 else |g|_1) - 0.1 |a|^2 - contact + 1.

    DMRLAD's ``step`` added 4 to the distance before the radius test, so its step reward was always
    the "outside" constant; here the step reward is the formula (the one its relabeler used).
    """

    max_radius = 1.0
    ctrl_weight = 0.1
    goal_radius = 0.8

    @classmethod
    def task_reward(cls, xp, info, params):
        offset = cls.xy_offset(xp, info, params)
        inside = xp.sum(xp.square(offset), axis=-1) <= cls.goal_radius ** 2
        l1 = xp.where(inside, xp.sum(xp.abs(offset), axis=-1), xp.sum(xp.abs(params[..., :2]), axis=-1))
        return 4.0 - l1
