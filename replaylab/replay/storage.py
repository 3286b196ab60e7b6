"""Preallocated ring buffer of transitions, living where the update runs.

The storage is a pytree of fixed-shape arrays, so it can be carried through ``jit``,
``vmap`` (one buffer per seed) and ``scan``. Adding a row is a ``dynamic_update_slice``
inside the same compiled call as the updates; with the state donated, XLA writes it in
place instead of copying the buffer.

Memory per transition: 4 bytes x (2 obs_dim + act_dim + 1) + 1 (terminated) + 8 (episode
id and step), so 1M HalfCheetah transitions take 173 MB.

Columns beyond these are declared by the components that need them (an env with tasks
declares ``task`` and the ``info`` it recomputes rewards from) and live in
``Transition.extra``; without any, the storage and every compiled call are as before.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Transition:
    """One environment step (or a batch of them: leading axes are free)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array  # true terminal: no bootstrap. A time-limit truncation is False here.
    episode: jax.Array  # episode id, unique within a seed (CT, HER)
    step: jax.Array  # step index within the episode
    extra: dict = struct.field(default_factory=dict)  # declared columns, e.g. task, info


@struct.dataclass
class Storage:
    data: Transition  # each field has a leading capacity axis
    size: jax.Array  # rows filled, <= capacity
    ptr: jax.Array  # next row to write

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[0]


def init(capacity: int, obs_dim: int, act_dim: int, columns: dict | None = None) -> Storage:
    """An empty ring; ``columns`` maps extra column names to a (shape, dtype) per row."""
    f32 = jnp.float32
    data = Transition(
        obs=jnp.zeros((capacity, obs_dim), f32),
        action=jnp.zeros((capacity, act_dim), f32),
        reward=jnp.zeros((capacity,), f32),
        next_obs=jnp.zeros((capacity, obs_dim), f32),
        terminated=jnp.zeros((capacity,), jnp.bool_),
        episode=jnp.zeros((capacity,), jnp.int32),
        step=jnp.zeros((capacity,), jnp.int32),
        extra={name: jnp.zeros((capacity, *shape), dtype) for name, (shape, dtype) in (columns or {}).items()},
    )
    return Storage(data=data, size=jnp.zeros((), jnp.int32), ptr=jnp.zeros((), jnp.int32))


def add(storage: Storage, tr: Transition) -> Storage:
    """Write one transition at ``ptr`` (overwriting the oldest row once full)."""
    ptr = storage.ptr

    def put(buf, x):
        x = jnp.asarray(x, buf.dtype).reshape((1,) + buf.shape[1:])
        return jax.lax.dynamic_update_slice_in_dim(buf, x, ptr, axis=0)

    data = jax.tree.map(put, storage.data, tr)
    cap = storage.capacity
    return Storage(data=data, size=jnp.minimum(storage.size + 1, cap), ptr=(ptr + 1) % cap)


def add_where(storage: Storage, tr: Transition, keep: jax.Array) -> Storage:
    """Write the rows of ``tr`` (n, ...) where ``keep``, in order, from ``ptr`` on (a
    model rollout step: rows that ended are skipped)."""
    cap = storage.capacity
    rank = jnp.cumsum(keep) - 1
    pos = jnp.where(keep, (storage.ptr + rank) % cap, cap)  # cap: out of range, dropped
    data = jax.tree.map(lambda col, x: col.at[pos].set(x.astype(col.dtype), mode="drop"), storage.data, tr)
    n = jnp.sum(keep).astype(jnp.int32)
    return Storage(data=data, size=jnp.minimum(storage.size + n, cap), ptr=(storage.ptr + n) % cap)


def gather(storage: Storage, idx: jax.Array) -> Transition:
    return jax.tree.map(lambda x: x[idx], storage.data)


def holds_step(storage: Storage, rows: jax.Array, offset: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ring rows ``rows + offset``, and whether each holds step ``step[rows] + offset`` of
    the episode of ``rows``. An episode's steps sit in consecutive rows, so this is true for
    the offsets inside the stored part of the episode and false beyond (another episode, or
    a row already overwritten). ``rows`` and ``offset`` broadcast."""
    d = storage.data
    other = (rows + offset) % storage.capacity
    return other, (d.episode[other] == d.episode[rows]) & (d.step[other] == d.step[rows] + offset)


def uniform_indices(storage: Storage, key: jax.Array, n: int) -> jax.Array:
    return jax.random.randint(key, (n,), 0, jnp.maximum(storage.size, 1))
