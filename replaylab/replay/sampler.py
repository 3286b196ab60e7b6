"""The sampler interface every replay method plugs into, and the uniform sampler.

A sampler is a frozen dataclass (the method's parameters, declared with ``opt`` so that
``replay.PARAM=...`` is validated and listed by ``--help``) plus a pytree state of its own
(priorities, a neighbour table, centroids...). All of its methods are pure and run
inside the compiled training step, vmapped over seeds:

- ``init(storage)``: the method's initial state.
- ``on_add(state, storage, row)``: a transition was just written at ``row``.
- ``sample(state, storage, key, pool)``: (batch, per-sample weights, rows, new state) for
  ``pool.n`` rows drawn from ``pool`` (the whole buffer, or one task's rows per group of
  a meta batch: see ``tasks.py``). The default draws the rows uniformly from the pool,
  gives them unit weights and builds the batch with ``augment(state, storage, rows, key,
  pool)``; an augmentation method overrides only ``augment`` (drawing any partner rows
  from the same pool), a different way of drawing rows (PER) overrides ``sample``.
- ``update(state, rows, td_errors)``: feedback from the gradient update (PER).
- ``refresh(state, storage, key)``: upkeep, called by the training loop once just before
  learning starts and then every ``refresh_interval`` environment steps (0: never).

The training loop knows nothing else about a method, so adding one touches no loop code.
The state is part of the checkpoint, so every method resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp

from replaylab.params import declared
from replaylab.replay.storage import Storage, Transition, gather


@dataclass(frozen=True)
class ReplaySpec:
    """What a method may need to know about the run (not user parameters)."""

    obs_dim: int
    act_dim: int
    capacity: int
    termination: Callable | None = None  # the env's terminal rule on next observations, if known
    multi_task: bool = False


def auto_interval(capacity: int, share: float = 0.02) -> int:
    """Default upkeep interval of an index over the buffer: every ``share`` of its
    capacity, at least every 1000 steps. Rows newer than that are what it may not know."""
    return max(1000, int(capacity * share))


@dataclass(frozen=True)
class Sampler:
    """Base class: uniform sampling with unit weights and no state."""

    spec: ReplaySpec

    #: draws its rows and partners from the pool it is given, so it works within one task's data
    multi_task_ready: ClassVar[bool] = True
    #: its batch rows are stored rows or mixes of them, so a goal env's stored achieved goal
    #: (mixed alike, ``mixing.MIXED_COLUMNS``) still matches s', and the reward recomputed from it is right
    goal_ready: ClassVar[bool] = True

    @property
    def refresh_interval(self) -> int:
        return 0

    @classmethod
    def params(cls) -> dict:
        """The user parameters (``replay.NAME``) as dataclass fields."""
        return declared(cls)

    def init(self, storage: Storage):
        return ()

    def on_add(self, state, storage: Storage, row: jax.Array):
        return state

    def sample(self, state, storage: Storage, key: jax.Array, pool):
        rows = pool.draw(key)
        batch = self.augment(state, storage, rows, jax.random.fold_in(key, 1), pool)
        return batch, jnp.ones((pool.n,), jnp.float32), rows, state

    def augment(self, state, storage: Storage, rows: jax.Array, key: jax.Array, pool) -> Transition:
        """The batch rows made from the uniformly drawn ``rows``: as stored, by default."""
        return gather(storage, rows)

    def update(self, state, rows: jax.Array, td_errors: jax.Array):
        return state

    def refresh(self, state, storage: Storage, key: jax.Array):
        return state


@dataclass(frozen=True)
class Uniform(Sampler):
    """Uniform replay: every stored transition is equally likely."""
