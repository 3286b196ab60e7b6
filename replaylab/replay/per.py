"""PER, proportional prioritised replay (Schaul et al. 2016).

    P(i) = p_i^alpha / sum_j p_j^alpha;   new transitions get the largest priority so far
    w_i  = (N * P(i))^-beta / max_batch w;   beta annealed linearly to 1 if asked
    after the update: p_i = |TD_i| + eps

Within one task of a meta batch, P(i) is taken over that task's rows: the task's rows are a
few ranges of the ring (its visits), whose masses are differences of prefix sums read off
the same tree, so sampling stays exact and O(n log N) with no tree per task.

Sampling is stratified (one draw in each of n equal slices of the total mass) and runs
inside the compiled step on a sum tree (``SumTree``: one array per level, each node the
sum of its two children, the leaves p^alpha). Sampling and updating a batch cost
O(n log N). Importance weights are normalised by the batch maximum, so they are <= 1.

No copies: the tree is one array per level, and a sample's probability is read during
the descent. (With one flat heap XLA copied the whole tree twice per env step, and with a
separate read of the leaves, the leaf level; both seen in the compiled HLO at 1M rows.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.params import opt
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather


@struct.dataclass
class SumTree:
    """One array per level: ``levels[0]`` is the root (1,), ``levels[l]`` holds 2^l nodes,
    node v of level l is the sum of nodes 2v and 2v+1 of level l + 1, and the last level
    holds the leaves p^alpha. Separate arrays (not one flat heap) let XLA update every
    level in place: an update reads level l + 1 and writes level l, never the same buffer
    (with a flat heap it copied the whole tree twice per call)."""

    levels: tuple

    @property
    def leaves(self) -> jax.Array:
        return self.levels[-1]

    @property
    def total(self) -> jax.Array:
        return self.levels[0][0]


def tree_init(capacity: int) -> SumTree:
    depth = max(capacity - 1, 1).bit_length()
    return SumTree(tuple(jnp.zeros((1 << level,), jnp.float32) for level in range(depth + 1)))


def tree_set(tree: SumTree, rows: jax.Array, values: jax.Array) -> SumTree:
    """Set leaves ``rows`` to ``values`` and recompute the sums on their paths to the root."""
    levels = list(tree.levels)
    levels[-1] = levels[-1].at[rows].set(values)
    idx = rows
    for level in range(len(levels) - 2, -1, -1):
        idx = idx // 2
        child = levels[level + 1]
        levels[level] = levels[level].at[idx].set(child[2 * idx] + child[2 * idx + 1])
    return SumTree(tuple(levels))


def tree_find(tree: SumTree, mass: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The leaf where the prefix sum of the leaves first exceeds ``mass`` (vectorised), and
    its value. The descent never enters an empty subtree, so rounding in the sums cannot
    land it on an empty (unwritten) leaf."""
    idx = jnp.zeros(mass.shape, jnp.int32)
    value = jnp.broadcast_to(tree.total, mass.shape)
    for level in tree.levels[1:]:
        left, right = level[2 * idx], level[2 * idx + 1]
        go_right = (mass >= left) & (right > 0)
        mass = jnp.where(go_right, mass - left, mass)
        idx = 2 * idx + go_right.astype(jnp.int32)
        value = jnp.where(go_right, right, left)
    return idx, value


def tree_prefix(tree: SumTree, end: jax.Array) -> jax.Array:
    """Sum of the leaves [0, end) (vectorised), read along end's path from the root."""
    depth = len(tree.levels) - 1
    idx = jnp.zeros(end.shape, jnp.int32)
    acc = jnp.zeros(end.shape, jnp.float32)
    for level in range(1, depth + 1):
        bit = (end >> (depth - level)) & 1
        acc = acc + jnp.where(bit == 1, tree.levels[level][2 * idx], 0.0)
        idx = 2 * idx + bit
    return jnp.where(end >= (1 << depth), tree.total, acc)


def ranges_find(tree: SumTree, lo: jax.Array, hi: jax.Array, n: int, key: jax.Array):
    """Stratified draws of ``n`` leaves per group from the union of its row ranges
    [lo, hi) (groups x ranges), proportionally to the leaves: rows and their probability
    within the group (groups, n), and the group's row count."""
    base = tree_prefix(tree, lo)
    mass = jnp.maximum(tree_prefix(tree, hi) - base, 0.0)
    cum = jnp.cumsum(mass, axis=1)
    total = cum[:, -1:]
    u = (jnp.arange(n, dtype=jnp.float32) + jax.random.uniform(key, (lo.shape[0], n))) * (total / n)
    u = jnp.minimum(u, total * (1 - 1e-6))
    r = jnp.minimum(jax.vmap(jnp.searchsorted)(cum, u), lo.shape[1] - 1)
    take = partial(jnp.take_along_axis, axis=1)
    target = take(base, r) + u - (take(cum, r) - take(mass, r))
    rows, leaf = tree_find(tree, target)
    rows = jnp.clip(rows, take(lo, r), take(hi, r) - 1)  # rounding may step just outside the range
    return rows, leaf / total, jnp.sum(hi - lo, axis=1, keepdims=True)


@struct.dataclass
class PERState:
    tree: SumTree
    max_priority: jax.Array  # largest p^alpha seen; new rows get it
    samples: jax.Array  # batches drawn so far (drives the beta schedule)


@dataclass(frozen=True)
class PER(Sampler):
    alpha: float = opt(0.6, "priority exponent", min=0.0)
    beta: float = opt(0.4, "initial importance-sampling exponent", min=0.0, max=1.0)
    beta_steps: int = opt(0, "updates over which beta is annealed linearly to 1 (0: constant)", min=0)
    eps: float = opt(1e-6, "added to |TD| so no priority is zero", min=0.0)

    def init(self, storage):
        return PERState(tree=tree_init(storage.capacity), max_priority=jnp.ones((), jnp.float32),
                        samples=jnp.zeros((), jnp.int32))

    def on_add(self, state, storage, row):
        return state.replace(tree=tree_set(state.tree, row[None], state.max_priority[None]))

    def current_beta(self, samples: jax.Array) -> jax.Array:
        if self.beta_steps == 0:
            return jnp.asarray(self.beta, jnp.float32)
        frac = jnp.minimum(samples.astype(jnp.float32) / self.beta_steps, 1.0)
        return self.beta + (1.0 - self.beta) * frac

    def sample(self, state, storage, key, pool):
        n = pool.n
        ranges = pool.ring_ranges()
        if ranges is None:  # the whole buffer
            total = state.tree.total
            mass = (jnp.arange(n, dtype=jnp.float32) + jax.random.uniform(key, (n,))) * (total / n)
            rows, leaf = tree_find(state.tree, jnp.minimum(mass, total * (1 - 1e-6)))
            prob = leaf / total  # read during the descent: a separate read of the leaves made XLA copy them
            count = storage.size.astype(jnp.float32)
        else:  # each group's rows: one task's in a meta batch
            rows, prob, count = ranges_find(state.tree, *ranges, n // ranges[0].shape[0], key)
            rows, prob, count = rows.reshape(-1), prob.reshape(-1), jnp.repeat(count, prob.shape[1]).astype(jnp.float32)
        w = (count * prob) ** -self.current_beta(state.samples)
        w = w / jnp.max(w)
        return gather(storage, rows), w, rows, state.replace(samples=state.samples + 1)

    def update(self, state, rows, td_errors):
        p = (jnp.abs(td_errors) + self.eps) ** self.alpha
        return state.replace(tree=tree_set(state.tree, rows, p),
                             max_priority=jnp.maximum(state.max_priority, jnp.max(p)))
