"""PEARL's 2-D point robots (``rlkit/envs/point_robot.py``; no MuJoCo).

Deviations: tasks are split from one seed-1337 draw (disjoint train/test); the sparse robot's
``step`` returns the sparse reward (PEARL returned the dense one and put the sparse one in info).
"""

from __future__ import annotations

import numpy as np

from replaylab.envs.meta.base import TASK_SEED, TaskSet, no_termination, register, sparsify
from replaylab.envs.meta.toy import PointMass


@register("point-robot", num_train=80, num_test=20, episode_length=20)
class PointRobot(PointMass):
    """PEARL point robot: s' = s + a, a in [-0.1, 0.1]^2, start ~ U[-1, 1]^2; goal ~ U[-1, 1]^2; r = -|s' - g|_2."""

    obs_dim = act_dim = info_dim = 2
    param_names = ("goal_x", "goal_y")
    param_low, param_high = -1.0, 1.0
    action_scale = 0.1
    random_start = True


@register("sparse-point-robot", num_train=80, num_test=20, episode_length=20)
class SparsePointRobot(PointRobot):
    """PEARL sparse point robot: start 0, goals on the upper unit half-circle; r = 1 - |s' - g|_2 within 0.2, else 0."""

    random_start = False
    goal_radius = 0.2

    @classmethod
    def make_tasks(cls, num_train: int, num_test: int) -> TaskSet:
        """Angles equally spaced over [0, pi], shuffled with TASK_SEED, then split train / test."""
        angles = np.linspace(0.0, np.pi, num_train + num_test)
        np.random.default_rng(TASK_SEED).shuffle(angles)
        return TaskSet(cls.param_names, np.stack([np.cos(angles), np.sin(angles)], -1), num_train, num_test)

    @classmethod
    def reward_fn(cls, xp, obs, action, next_obs, info, params):
        dense, _ = super().reward_fn(xp, obs, action, next_obs, info, params)
        reward = sparsify(xp, dense, cls.goal_radius, inside=1.0, outside=0.0)
        return reward, no_termination(xp, reward)
