"""PER, proportional prioritised replay (Schaul et al. 2016).

    P(i) = p_i^alpha / sum_j p_j^alpha;   new transitions get the largest priority so far
    w_i  = (N * P(i))^-beta / max_batch w;   beta annealed linearly to 1 if asked
    after the update: p_i = |TD_i| + eps

Sampling is stratified (one draw in each of n equal slices of the total mass) and runs
inside the compiled step on a sum tree: a flat array where node v holds the sum of its
children 2v and 2v+1 and the leaves hold p^alpha. Sampling and updating a batch cost
O(n log N). Importance weights are normalised by the batch maximum, so they are <= 1.

Known cost: in the compiled update XLA copies the tree twice per env step (two copies of
f32[2^21] at a 1M buffer, seen in the compiled HLO), one reason PER measured 1.21-1.30x
uniform per update at 1M rows. Not fixed yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.params import opt
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather


@struct.dataclass
class SumTree:
    nodes: jax.Array  # (2 * leaves,): nodes[1] is the total, leaves start at ``leaves``

    @property
    def leaves(self) -> int:
        return self.nodes.shape[0] // 2

    @property
    def total(self) -> jax.Array:
        return self.nodes[1]


def tree_init(capacity: int) -> SumTree:
    leaves = 1 << max(capacity - 1, 1).bit_length()
    return SumTree(jnp.zeros((2 * leaves,), jnp.float32))


def tree_set(tree: SumTree, rows: jax.Array, values: jax.Array) -> SumTree:
    """Set leaves ``rows`` to ``values`` and recompute the sums on their paths to the root."""
    idx = rows + tree.leaves
    nodes = tree.nodes.at[idx].set(values)
    for _ in range(tree.leaves.bit_length() - 1):
        idx = idx // 2
        nodes = nodes.at[idx].set(nodes[2 * idx] + nodes[2 * idx + 1])
    return SumTree(nodes)


def tree_find(tree: SumTree, mass: jax.Array) -> jax.Array:
    """The leaf where the prefix sum of the leaves first exceeds ``mass`` (vectorised)."""
    idx = jnp.ones(mass.shape, jnp.int32)
    for _ in range(tree.leaves.bit_length() - 1):
        left = tree.nodes[2 * idx]
        go_right = mass >= left
        mass = jnp.where(go_right, mass - left, mass)
        idx = 2 * idx + go_right.astype(jnp.int32)
    return idx - tree.leaves


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

    def sample(self, state, storage, key, n):
        total = state.tree.total
        mass = (jnp.arange(n, dtype=jnp.float32) + jax.random.uniform(key, (n,))) * (total / n)
        rows = jnp.clip(tree_find(state.tree, jnp.minimum(mass, total * (1 - 1e-6))), 0,
                        jnp.maximum(storage.size - 1, 0))
        prob = state.tree.nodes[rows + state.tree.leaves] / total
        w = (storage.size.astype(jnp.float32) * prob) ** -self.current_beta(state.samples)
        w = w / jnp.max(w)
        return gather(storage, rows), w, rows, state.replace(samples=state.samples + 1)

    def update(self, state, rows, td_errors):
        p = (jnp.abs(td_errors) + self.eps) ** self.alpha
        return state.replace(tree=tree_set(state.tree, rows, p),
                             max_priority=jnp.maximum(state.max_priority, jnp.max(p)))
