"""The sampler interface every replay method plugs into, and the uniform sampler.

A sampler is a static object (its hyper-parameters) plus a pytree state of its own
(priorities, a neighbour table, centroids...). All of its methods are pure and run
inside the compiled training step, vmapped over seeds:

- ``init(storage)``: the method's initial state.
- ``on_add(state, storage, row)``: a transition was just written at ``row``.
- ``sample(state, storage, key, n)``: a batch, its per-sample weights and the rows used.
- ``update(state, rows, td_errors)``: feedback from the gradient update (PER).
- ``refresh(state, storage, key)``: periodic upkeep, called by the training loop every
  ``refresh_interval`` environment steps (0: never).

The training loop knows nothing else about a method, so adding one touches no loop code.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from replaylab.replay.storage import Storage, Transition, gather, uniform_indices


@dataclass(frozen=True)
class Sampler:
    """Base class: uniform sampling with unit weights and no state."""

    refresh_interval: int = 0

    def init(self, storage: Storage):
        return ()

    def on_add(self, state, storage: Storage, row: jax.Array):
        return state

    def sample(self, state, storage: Storage, key: jax.Array, n: int) -> tuple[Transition, jax.Array, jax.Array]:
        rows = uniform_indices(storage, key, n)
        return gather(storage, rows), jnp.ones((n,), jnp.float32), rows

    def update(self, state, rows: jax.Array, td_errors: jax.Array):
        return state

    def refresh(self, state, storage: Storage, key: jax.Array):
        return state


class Uniform(Sampler):
    """Uniform replay: every stored transition is equally likely."""


SAMPLERS: dict[str, type[Sampler]] = {"uniform": Uniform}


def make_sampler(name: str, params: dict | None = None) -> Sampler:
    return SAMPLERS[name](**(params or {}))
