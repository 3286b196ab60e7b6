"""LCER, Local Cluster Experience Replay (szahlner/lcer): k-means clusters in z-scored
(s, a) space, and mixup inside a cluster. Two variants:

LCER-CC, cluster centre:
    i ~ uniform;  c = nearest centroid of z_i (labelled at insertion or at the last refit)
    centre = mean_c + N(0, 1) * (noise * std_c)     mean/std of (s, a, r, s') over c's members
    lam ~ Beta(alpha, alpha) (alpha = 1: U(0, 1));   row = lam * T_i + (1 - lam) * centre

LCER-RM, random member:
    i ~ uniform;  c = nearest centroid of z_i;  p, q ~ uniform over c's members
    (p = q = i if c has none);  row = lam * T_p + (1 - lam) * T_q

Termination of a synthetic row is recomputed from its interpolated s' where the env's
rule is known (``envs/termination.py``: Hopper, Walker2d, Ant, the inverted pendulums; never
for HalfCheetah, Swimmer, ...). Otherwise it is the sample's flag (i, or p for RM), and
a pair that touches a terminal stays the real sample, as in NMER.

Upkeep, every ``refresh_every`` env steps and just before learning starts: refit the
z-scoring and the centroids (warm-started Lloyd iterations on a random subset), reassign
every row, and recompute the clusters' statistics. Differences from the original, which
are sound choices rather than copies: it refitted RM's k-means from scratch after every
episode and kept CC's statistics as running sums over every transition ever assigned
(evicted ones included, under centroids that have since moved); here statistics and
membership describe the rows in the buffer at the last refit. Rows added since then are
sampled as i but are nobody's partner until the next refit; a member row overwritten
since the refit is used only if its new transition is labelled with the same cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.params import opt
from replaylab.replay import clusters as cl
from replaylab.replay.mixing import beta, mix, pair_or_real, where_rows
from replaylab.replay.sampler import Sampler, auto_interval
from replaylab.replay.storage import Transition, gather


@struct.dataclass
class LCERState:
    clusters: cl.Clusters
    centre_mean: jax.Array  # (C, D) mean of the flattened (s, a, r, s') of each cluster (CC)
    centre_std: jax.Array  # (C, D)


def _flat(t: Transition) -> jax.Array:
    return jnp.concatenate([t.obs, t.action, t.reward[..., None], t.next_obs], axis=-1)


@dataclass(frozen=True)
class _LCER(Sampler):
    multi_task_ready: ClassVar[bool] = False  # its clusters (and centres) span every task
    clusters: int = opt(1000, "k-means clusters", min=1)
    alpha: float = opt(1.0, "Beta(alpha, alpha) of the mixing coefficient (1: uniform)", min=1e-3)
    refresh_every: int = opt(0, "env steps between k-means refits (0: auto, capacity / 50 and "
                                "at least 1000)", min=0)
    kmeans_iters: int = opt(3, "Lloyd iterations per refit (warm-started from the last centroids)", min=0)
    kmeans_points: int = opt(32768, "rows the k-means is fitted on per refit", min=1)

    @property
    def refresh_interval(self) -> int:
        return self.refresh_every or auto_interval(self.spec.capacity)

    @property
    def num_clusters(self) -> int:
        return min(self.clusters, self.spec.capacity)

    def init(self, storage):
        s, C = self.spec, self.num_clusters
        D = 2 * s.obs_dim + s.act_dim + 1
        return LCERState(clusters=cl.init(storage.capacity, s.obs_dim + s.act_dim, C),
                         centre_mean=jnp.zeros((C, D)), centre_std=jnp.zeros((C, D)))

    def refresh(self, state, storage, key):
        c = cl.rebuild(state.clusters, storage, key, self.kmeans_iters, self.kmeans_points)
        v = _flat(storage.data)
        cnt = jnp.maximum(c.count, 1).astype(v.dtype)[:, None]
        C = self.num_clusters
        mean = jax.ops.segment_sum(v, c.label, C + 1)[:-1] / cnt
        var = jax.ops.segment_sum(v * v, c.label, C + 1)[:-1] / cnt - mean**2
        return LCERState(clusters=c, centre_mean=mean, centre_std=jnp.sqrt(jnp.maximum(var, 0.0)))

    def on_add(self, state, storage, row):
        """Label the new row with its nearest centroid, so sampling only reads labels."""
        c = state.clusters
        home = cl.nearest_nonempty(c, cl.normalise(c, cl.features(storage, row[None])), 1)[0, 0]
        label = c.label.at[row].set(jnp.where(c.built, home, c.num))
        return state.replace(clusters=c.replace(label=label))

    def _home(self, state, rows):
        c = state.clusters
        home = c.label[rows]
        safe = jnp.minimum(home, c.num - 1)
        return safe, c.built & (home < c.num) & (c.count[safe] > 0)

    def _mix(self, sample: Transition, partner: Transition, lam: jax.Array, ok: jax.Array) -> Transition:
        """Mix where ``ok``. Where the env's termination rule is known the mixed row's flag
        is recomputed from its s'; otherwise a pair touching a terminal stays real."""
        rule = self.spec.termination
        if rule is None:
            return pair_or_real(sample, partner, lam, ok)
        mixed = mix(sample, partner, lam)
        return where_rows(ok, mixed.replace(terminated=rule(mixed.next_obs)), sample)


@dataclass(frozen=True)
class LCERClusterCentre(_LCER):
    noise: float = opt(0.01, "std of the centre's noise, as a fraction of the cluster's std", min=0.0)
    goal_ready: ClassVar[bool] = False  # the centre's s' has no achieved goal to go with it

    def augment(self, state, storage, rows, key, pool):
        n = rows.shape[0]
        k_noise, k_lam = jax.random.split(key)
        real = gather(storage, rows)
        home, ok = self._home(state, rows)
        v = state.centre_mean[home] + jax.random.normal(k_noise, (n, state.centre_mean.shape[1])) \
            * (self.noise * state.centre_std[home])
        o, a = self.spec.obs_dim, self.spec.act_dim
        centre = real.replace(obs=v[:, :o], action=jnp.clip(v[:, o:o + a], -1.0, 1.0), reward=v[:, o + a],
                              next_obs=v[:, o + a + 1:])
        return self._mix(real, centre, beta(k_lam, self.alpha, n), ok)


@dataclass(frozen=True)
class LCERRandomMember(_LCER):
    def sample(self, state, storage, key, pool):  # the row it reports is p, drawn from the cluster
        n = pool.n
        k_rows, k_p, k_q, k_lam = jax.random.split(key, 4)
        rows = pool.draw(k_rows)
        c = state.clusters
        home, ok = self._home(state, rows)

        def member(k):
            pos = c.start[home] + jax.random.randint(k, (n,), 0, jnp.maximum(c.count[home], 1))
            return jnp.where(ok, c.order[pos], rows)

        p, q = member(k_p), member(k_q)
        # a member row overwritten since the refit holds a new transition, labelled anew on
        # insertion: it counts only if it still belongs to the cluster
        ok = ok & (c.label[p] == home) & (c.label[q] == home)
        p, q = jnp.where(ok, p, rows), jnp.where(ok, q, rows)
        mixed = self._mix(gather(storage, p), gather(storage, q), beta(k_lam, self.alpha, n), ok)
        return mixed, jnp.ones((n,), jnp.float32), p, state
