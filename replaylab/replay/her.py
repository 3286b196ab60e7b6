"""Hindsight experience replay (Andrychowicz et al., NeurIPS 2017): ``her=STRATEGY``, ``her.k``.

On a goal env the policy observes [observation, goal] and the reward is a function of the
goal achieved after the step and the goal (``envs/goal.py``). HER turns failures into
successes by asking what the agent did achieve. Inside the compiled update, after the
replay method has built its batch (so ``replay=lcer_rm her=future`` composes, as in LCER):

1. for each row, with probability k / (k + 1) (k = 4: 80%), pick a step of the row's own
   episode by the strategy, counted from the row's step t among the episode's stored
   steps [t - back, t + ahead]:
   - ``future``: uniformly in [t, t + ahead] (the row's own step included);
   - ``final``: the last stored step, t + ahead;
   - ``episode``: uniformly in [t - back, t + ahead];
2. its achieved goal becomes the row's goal, in obs and next_obs;
3. every row's reward is recomputed as reward_fn(achieved_goal, goal) with the env's own
   reward on device, relabelled or not (a mixed row thus gets the reward of its mixed
   achieved goal, not a mix of rewards). Termination flags stay as stored: the Fetch
   and Hand tasks never terminate.

``her=none`` relabels nothing; on a goal env step 3 still applies.

Episode extents come from the stored columns only. Rows of one episode are consecutive in
the ring, so row r + d holds step t + d of r's episode iff its (episode, step) are
(episode[r], t + d). That predicate holds for d = 0 .. ahead and fails beyond (another
episode, a row overwritten after a ring wrap, or a row not yet written), so ``ahead`` is
found by a binary search over d < the time limit, ``back`` likewise: a relabelled goal
never comes from another episode and never crosses a wrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from replaylab.params import declared, opt
from replaylab.replay.storage import Storage, holds_step


@dataclass(frozen=True)
class Hindsight:
    """``her=none``: no relabelling; on a goal env each row's reward is recomputed."""

    goal: Any = None  # the env's goal.GoalSpec; None: not a goal env (nothing to do)

    @classmethod
    def params(cls) -> dict:
        return declared(cls)

    @property
    def relabels(self) -> bool:
        return False

    def __call__(self, data, rows: jax.Array, storage: Storage, key: jax.Array):
        """``data`` (the batch's rows, built from storage ``rows``) with goals relabelled
        and rewards recomputed."""
        if self.goal is None:
            return data
        dim = self.goal.dim
        goal = data.obs[..., -dim:]
        if self.relabels:
            k_pick, k_which = jax.random.split(key)
            picked = self.pick(storage, rows, k_which)
            achieved = storage.data.extra["achieved_goal"][picked]
            relabel = jax.random.uniform(k_pick, rows.shape) < self.k / (self.k + 1.0)
            goal = jnp.where(relabel[:, None], achieved, goal)
        reward = self.goal.reward_fn(data.extra["achieved_goal"], goal).astype(data.reward.dtype)
        return data.replace(obs=data.obs.at[..., -dim:].set(goal), next_obs=data.next_obs.at[..., -dim:].set(goal),
                            reward=reward)

    def pick(self, storage: Storage, rows: jax.Array, key: jax.Array) -> jax.Array:
        """The storage row whose achieved goal becomes each row's goal."""
        raise NotImplementedError

    def extent(self, storage: Storage, rows: jax.Array, sign: int) -> jax.Array:
        """How many stored steps of each row's episode lie after it (``sign`` 1) or
        before it (-1): the largest d < episode_length with row r + sign d holding step
        t + sign d of the episode (binary search; see the module docstring)."""
        lo = jnp.zeros_like(rows)  # holds
        hi = jnp.full_like(rows, min(self.goal.episode_length, storage.capacity))  # does not hold
        for _ in range(max(1, math.ceil(math.log2(self.goal.episode_length + 1)))):
            mid = (lo + hi) // 2
            _, ok = holds_step(storage, rows, sign * mid)
            lo, hi = jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)
        return lo


def _uniform_int(key: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """One integer uniformly in [lo, hi] per row."""
    u = jax.random.uniform(key, lo.shape)
    return lo + jnp.minimum(jnp.floor(u * (hi - lo + 1)).astype(lo.dtype), hi - lo)


@dataclass(frozen=True)
class Future(Hindsight):
    """``her=future``: a goal achieved at this step or a later one of the episode."""

    k: int = opt(4, "relabelled goals per real one: a row is relabelled with probability k/(k+1)", min=0)

    @property
    def relabels(self) -> bool:
        return self.k > 0

    def pick(self, storage, rows, key):
        ahead = self.extent(storage, rows, 1)
        return (rows + _uniform_int(key, jnp.zeros_like(ahead), ahead)) % storage.capacity


@dataclass(frozen=True)
class Final(Future):
    """``her=final``: the goal achieved at the episode's last stored step."""

    def pick(self, storage, rows, key):
        return (rows + self.extent(storage, rows, 1)) % storage.capacity


@dataclass(frozen=True)
class Episode(Future):
    """``her=episode``: a goal achieved at any stored step of the episode."""

    def pick(self, storage, rows, key):
        off = _uniform_int(key, -self.extent(storage, rows, -1), self.extent(storage, rows, 1))
        return (rows + off) % storage.capacity


STRATEGIES: dict[str, type[Hindsight]] = {"none": Hindsight, "future": Future, "final": Final, "episode": Episode}
