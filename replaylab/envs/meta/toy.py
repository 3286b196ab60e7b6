"""SMRL's toy goal-reaching tasks (``meta_envs/toy_goal``): a point on a line or in a plane.

Ranges: SMRL's ``toy1d`` factory (``configs/environment_factory.py``) builds ``Toy1D`` with
``min_pos`` 0.1, ``max_pos`` 10, ``max_action`` 1 and goals uniform over the positions, and
the class starts its state at 0: every goal lies to the right of the start, so the first
reward says where the goal is. ``toy1d`` is that; ``toy1d-twosided`` is ours, the symmetric
range [-10, 10] of SMRL's ``toy1d_rand`` factory with ``toy1d``'s max_action 1 and fixed
start (a single transition is then ambiguous: the goal is at s' +- |r|), and
``toy1d-onesided`` is ``toy1d`` without its wall at 0.1 (positions in [-10, 10]), the env of
our earlier results. Goals are uniform over the goal range (task_scale 1). Episodes last 100
steps. SMRL's ``toy1d`` factory also resampled the task every 1000 steps; here in-episode
switches are opt-in (``change_steps``).
"""

from __future__ import annotations

import numpy as np

from replaylab.envs.meta.base import MetaEnv, no_termination, register, sparsify


class PointMass(MetaEnv):
    """Shared point dynamics: s' = s + a (optionally norm-clipped a, clipped s'); info = s'."""

    bounds: tuple[float, float] | None = None  # position box, None = unbounded
    norm_clip = False  # clip |a|_2 to action_scale (after clipping each coordinate)
    random_start = False  # start ~ U[-1, 1]^dim from the reset seed, else at the origin
    response = ("x", lambda obs, info: info[..., 0], 0)  # x against the goal's (first) coordinate

    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        dim = self.obs_dim
        self._s = rng.uniform(-1.0, 1.0, dim) if self.random_start else np.zeros(dim)
        return self._s.astype(np.float32)

    def _advance(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.norm_clip:
            norm = float(np.sqrt(a @ a))
            if norm > self.action_scale:
                a = a * (self.action_scale / norm)
        s = self._s + a
        if self.bounds is not None:
            s = np.clip(s, *self.bounds)
        self._s = s
        obs = s.astype(np.float32)
        return obs, obs.copy()

    @classmethod
    def reward_fn(cls, xp, obs, action, next_obs, info, params):
        reward = -xp.sqrt(xp.sum(xp.square(info - params), axis=-1))
        return reward, no_termination(xp, reward)


@register("toy1d-twosided", num_train=100, num_test=25, episode_length=100)
class Toy1DTwoSided(PointMass):
    """Toy1D on [-10, 10] (ours): s' = clip(s + a), |a| <= 1, start 0; goal ~ U(-10, 10); r = -|s' - g|."""

    obs_dim = act_dim = info_dim = 1
    param_names = ("goal",)
    param_low, param_high = -10.0, 10.0
    bounds = (-10.0, 10.0)
    response = ("position", lambda obs, info: info[..., 0], 0)


@register("toy1d-onesided", num_train=100, num_test=25, episode_length=100)
class Toy1DOneSided(Toy1DTwoSided):
    """``toy1d`` without the wall at 0.1: goals ~ U(0.1, 10], positions in [-10, 10], start 0."""

    param_low, param_high = 0.1, 10.0


@register("toy1d", num_train=100, num_test=25, episode_length=100)
class Toy1D(Toy1DOneSided):
    """SMRL's toy1d: s in [0.1, 10], s' = clip(s + a), |a| <= 1, start 0; goal ~ U(0.1, 10); r = -|s' - g|."""

    bounds = (0.1, 10.0)


@register("toy1d-sparse", num_train=100, num_test=25, episode_length=100)
class Toy1DSparse(Toy1DOneSided):
    """A sparse one-sided Toy1D (ours, for DMRLAD's claim): goals ~ U[0.1, 10); r = 1 - |s' - g| within 1, else 0.

    No step's reward says where the goal is until the agent is within 1 of it, so an agent
    must search (walk right) and then stay: the sparse-reward setting that DMRLAD's
    relabelling is for, on a task small enough for this CPU. Steps are at most 1 long, so a
    walk cannot jump over the 2-wide rewarded interval.
    """

    goal_radius = 1.0

    @classmethod
    def reward_fn(cls, xp, obs, action, next_obs, info, params):
        dense, _ = super().reward_fn(xp, obs, action, next_obs, info, params)
        reward = sparsify(xp, dense, cls.goal_radius, inside=1.0, outside=0.0)
        return reward, no_termination(xp, reward)


@register("toy2d", num_train=100, num_test=25, episode_length=100)
class Toy2D(PointMass):
    """SMRL Toy2D (L2): s in [-10, 10]^2, |a|_2 <= 1, start 0; goal ~ U[-10, 10]^2; r = -|s' - g|_2."""

    obs_dim = act_dim = info_dim = 2
    param_names = ("goal_x", "goal_y")
    param_low, param_high = -10.0, 10.0
    bounds = (-10.0, 10.0)
    norm_clip = True
