"""Single- and multi-task replay over one storage: row pools, a task index, contexts.

A batch is drawn from a *pool* of rows: the whole buffer for a single-task run, one task's
rows per group of a meta batch. Replay methods draw their rows (and mixing partners)
from the pool they are given, so ``replay=mixup`` mixes only rows of the same task and
PER's priorities act within a task, without a method knowing about tasks.

Multi-task layout (``MultiTask``), one ring per seed, not a copy per task:

- every row stores its ``task``; rows are written in time order, so each task's data is
  a set of *segments* of consecutive rows (one per visit of the task: a block of
  ``episodes_per_task`` episodes, cut where the task switches inside an episode);
- the index keeps, per train task, a ring of its last ``segments`` segments as (global
  position of the first row, length, context rows). A global position g lives in row
  g mod capacity and is still stored while g >= rows written - capacity, so overwritten
  rows drop out of every segment without any bookkeeping at overwrite time;
- a meta batch draws ``meta_batch`` train tasks among those with data (with replacement,
  as PEARL), then ``per_task`` rows of each, uniformly over the task's stored rows.
  Memory: 12 bytes x train tasks x segments (100 tasks x 64 segments: 77 kB), on top of
  the 4-byte task column per row.

Context sources (what a task encoder reads, declared by the inference method):

- ``recent`` (PEARL): ``context_size`` rows drawn uniformly from the task's most recent
  visit, from the part collected with z from the prior or the posterior (not the "extra"
  RL-only episodes): the data PEARL's per-task encoder buffer holds.
- ``window`` (SMRL, CEMRL): the ``context_size`` transitions before each sampled row in
  its episode, zero-masked before the episode start.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.replay.storage import Storage, Transition, gather, holds_step, uniform_indices


@struct.dataclass
class Batch:
    """What one gradient update consumes."""

    data: Transition  # (n, ...) rows; a meta batch is task-major: (tasks * per_task, ...)
    weights: jax.Array  # (n,) per-sample loss weights
    rows: jax.Array  # (n,) storage rows, for sampler feedback (the real rows only, first, once model rows are added)
    tasks: jax.Array | None = None  # (tasks,) the train task of each group
    context: Transition | None = None  # (tasks, C, ...) or (n, C, ...) for windows
    context_mask: jax.Array | None = None  # same leading axes as context: a real row


class UniformPool:
    """Rows drawn uniformly from the whole buffer."""

    def __init__(self, storage: Storage, n: int):
        self.storage, self.n = storage, n

    def draw(self, key: jax.Array) -> jax.Array:
        return uniform_indices(self.storage, key, self.n)

    def same_pool(self, rows: jax.Array, partners: jax.Array) -> jax.Array:
        return jnp.ones(rows.shape, bool)

    def ring_ranges(self):
        """The pool's rows as ranges of the ring, per group; None: the whole buffer."""
        return None


# -- the task index ---------------------------------------------------------------------------

@struct.dataclass
class TaskIndexState:
    start: jax.Array  # (T, M) global position of each segment's first row
    length: jax.Array  # (T, M) rows in the segment
    ctx: jax.Array  # (T, M) leading rows of the segment that may serve as context
    opened: jax.Array  # (T,) segments ever opened per task; the newest is in slot opened - 1 mod M
    adds: jax.Array  # () rows written so far


def alive_segments(s: TaskIndexState, capacity: int) -> tuple[jax.Array, jax.Array]:
    """First still-stored global position and stored length of every segment."""
    first = jnp.maximum(s.start, s.adds - capacity)
    return first, jnp.maximum(s.start + s.length - first, 0)


class TaskPool:
    """``per_task`` rows of each of ``tasks``, uniformly over each task's stored rows."""

    def __init__(self, s: TaskIndexState, storage: Storage, tasks: jax.Array, per_task: int):
        self.storage, self.tasks, self.per_task = storage, tasks, per_task
        self.n = tasks.shape[0] * per_task
        first, length = alive_segments(s, storage.capacity)
        self.first, self.length = first[tasks], length[tasks]  # (Tb, M)

    def draw(self, key: jax.Array) -> jax.Array:
        cum = jnp.cumsum(self.length, axis=1)
        total = jnp.maximum(cum[:, -1:], 1)
        k = jax.random.randint(key, (self.tasks.shape[0], self.per_task), 0, total)
        seg = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(cum, k)
        seg_end = jnp.take_along_axis(cum, seg, 1)
        offset = k - (seg_end - jnp.take_along_axis(self.length, seg, 1))
        g = jnp.take_along_axis(self.first, seg, 1) + offset
        return (g % self.storage.capacity).reshape(-1)

    def same_pool(self, rows: jax.Array, partners: jax.Array) -> jax.Array:
        task = self.storage.data.extra["task"]
        return task[rows] == task[partners]

    def ring_ranges(self) -> tuple[jax.Array, jax.Array]:
        """Each task's rows as [lo, hi) ranges of ring rows (tasks, 2 x segments): a
        segment that wraps past the end of the ring is two ranges."""
        cap = self.storage.capacity
        lo = self.first % cap
        end = lo + self.length
        first = (lo, jnp.minimum(end, cap))
        wrapped = (jnp.zeros_like(lo), jnp.maximum(end - cap, 0))
        return jnp.concatenate([first[0], wrapped[0]], 1), jnp.concatenate([first[1], wrapped[1]], 1)


@dataclass(frozen=True)
class SingleTask:
    """One task: batches are ``batch_size`` rows drawn from the whole buffer."""

    batch_size: int

    def init(self, capacity: int):
        return ()

    def on_add(self, state, storage: Storage, row: jax.Array):
        return state

    def sample(self, state, storage: Storage, key: jax.Array, sampler, sampler_state):
        data, weights, rows, sampler_state = sampler.sample(sampler_state, storage, key,
                                                            UniformPool(storage, self.batch_size))
        return Batch(data=data, weights=weights, rows=rows), sampler_state


@dataclass(frozen=True)
class MultiTask:
    """Train tasks in one storage; a batch is ``meta_batch`` tasks x ``batch_size`` rows,
    with a context per task (or per row) when the inference method reads one."""

    num_tasks: int  # train tasks
    meta_batch: int
    batch_size: int
    episodes_per_task: int  # episodes of one visit (block) of a task
    context_episodes: int  # leading episodes of a visit that may serve as context
    segments: int  # segments remembered per task
    context: str = "none"  # none | recent | window
    context_size: int = 0

    def init(self, capacity: int) -> TaskIndexState:
        T, M, i32 = self.num_tasks, self.segments, jnp.int32
        return TaskIndexState(start=jnp.zeros((T, M), i32), length=jnp.zeros((T, M), i32),
                              ctx=jnp.zeros((T, M), i32), opened=jnp.zeros((T,), i32), adds=jnp.zeros((), i32))

    def on_add(self, s: TaskIndexState, storage: Storage, row: jax.Array) -> TaskIndexState:
        """Extend the task's newest segment, or open one where the task or the visit
        changed since the previous row (the row written just before, one back in the ring)."""
        d, E = storage.data, self.episodes_per_task
        task, episode = d.extra["task"][row], d.episode[row]
        prev = (row - 1) % storage.capacity
        is_ctx = (episode % E < self.context_episodes).astype(jnp.int32)
        new = (s.adds == 0) | (task != d.extra["task"][prev]) | (episode // E != d.episode[prev] // E)
        slot = jnp.where(new, s.opened[task], s.opened[task] - 1) % self.segments
        start = jnp.where(new, s.adds, s.start[task, slot])
        length = jnp.where(new, 0, s.length[task, slot]) + 1
        ctx = jnp.where(new, 0, s.ctx[task, slot]) + is_ctx
        return TaskIndexState(start=s.start.at[task, slot].set(start), length=s.length.at[task, slot].set(length),
                              ctx=s.ctx.at[task, slot].set(ctx), opened=s.opened.at[task].add(new.astype(jnp.int32)),
                              adds=s.adds + 1)

    def task_rows(self, s: TaskIndexState, capacity: int) -> jax.Array:
        """(T,) rows currently stored per train task."""
        return alive_segments(s, capacity)[1].sum(1)

    def sample(self, s: TaskIndexState, storage: Storage, key: jax.Array, sampler, sampler_state):
        k_tasks, k_rows, k_ctx = jax.random.split(key, 3)
        has_data = self.task_rows(s, storage.capacity) > 0
        tasks = jax.random.categorical(k_tasks, jnp.where(has_data, 0.0, -jnp.inf), shape=(self.meta_batch,))
        pool = TaskPool(s, storage, tasks, self.batch_size)
        data, weights, rows, sampler_state = sampler.sample(sampler_state, storage, k_rows, pool)
        context, mask = self.context_rows(s, storage, tasks, rows, k_ctx)
        batch = Batch(data=data, weights=weights, rows=rows, tasks=tasks, context=context, context_mask=mask)
        return batch, sampler_state

    # -- context sources --------------------------------------------------------------------
    def context_rows(self, s: TaskIndexState, storage: Storage, tasks, rows, key):
        if self.context == "recent":
            return recent_context(s, storage, tasks, self.context_size, key)
        if self.context == "window":
            return window_context(storage, rows, self.context_size)
        return None, None


def recent_context(s: TaskIndexState, storage: Storage, tasks: jax.Array, size: int, key: jax.Array):
    """``size`` rows per task from its newest segment's context part (the whole segment
    if it has none), uniformly with replacement."""
    cap = storage.capacity
    first, length = alive_segments(s, cap)
    slot = (s.opened[tasks] - 1) % s.start.shape[1]
    f = first[tasks, slot]
    n_ctx = jnp.maximum(s.start[tasks, slot] + s.ctx[tasks, slot] - f, 0)
    n = jnp.where(n_ctx > 0, n_ctx, length[tasks, slot])
    offset = jax.random.randint(key, (tasks.shape[0], size), 0, jnp.maximum(n, 1)[:, None])
    rows = (f[:, None] + offset) % cap
    return gather(storage, rows), jnp.broadcast_to((n > 0)[:, None], rows.shape)


def window_rows(storage: Storage, rows: jax.Array, size: int, shift: int = 0) -> tuple[jax.Array, jax.Array]:
    """Ring rows (n, size) of the ``size`` transitions before each row in its episode,
    oldest first (``shift=1``: the window that ends with the row itself), and which of them
    are real: rows before the episode start, or already overwritten, are not."""
    back = jnp.arange(size, 0, -1) - shift
    return holds_step(storage, rows[:, None], -back[None, :])


def window_context(storage: Storage, rows: jax.Array, size: int, shift: int = 0):
    """The ``size`` transitions before each row in its episode (oldest first; ``shift=1``:
    ending with the row), and the mask of the real ones (``window_rows``)."""
    prev, ok = window_rows(storage, rows, size, shift)
    return gather(storage, prev), ok
