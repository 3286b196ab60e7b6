"""k-means over the buffer's normalised (s, a): the index behind NMER and LCER.

A rebuild z-scores z = (s, a) over the stored rows, runs a few Lloyd iterations on a
random subset (warm-started from the previous centroids), assigns every row to its
nearest centroid and sorts the rows by cluster. The sorted order puts rows that are
close in z-space next to each other, so a cluster's members are one contiguous slice
(LCER-RM draws from it) and a fixed-size window of that order around a row is a
candidate set for its nearest neighbours (NMER).

Everything has a fixed shape, runs inside ``jit`` and is vmapped over seeds. Rows
written after a rebuild have no cluster (label == clusters) until the next one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.replay.storage import Storage

_CHUNK = 4096  # rows per chunk when assigning the whole buffer (bounds the distance matrix)


@struct.dataclass
class Clusters:
    mean: jax.Array  # (d,) z-score statistics of (s, a) at the last rebuild
    scale: jax.Array  # (d,)
    centroids: jax.Array  # (C, d) in z-scored space
    label: jax.Array  # (N,) cluster of each row at the last rebuild; C for none
    order: jax.Array  # (N,) rows sorted by label; the clustered rows come first
    start: jax.Array  # (C,) first position of each cluster in ``order``
    count: jax.Array  # (C,) members of each cluster
    built: jax.Array  # () bool: a rebuild has happened

    @property
    def num(self) -> int:
        return self.centroids.shape[0]

    @property
    def clustered(self) -> jax.Array:
        return jnp.sum(self.count)


def init(capacity: int, dim: int, num_clusters: int) -> Clusters:
    return Clusters(mean=jnp.zeros((dim,)), scale=jnp.ones((dim,)), centroids=jnp.zeros((num_clusters, dim)),
                    label=jnp.full((capacity,), num_clusters, jnp.int32), order=jnp.arange(capacity, dtype=jnp.int32),
                    start=jnp.zeros((num_clusters,), jnp.int32), count=jnp.zeros((num_clusters,), jnp.int32),
                    built=jnp.zeros((), bool))


TASK_SEPARATION = 1e4  # normalised distance between rows of different tasks


def features(storage: Storage, rows: jax.Array | None = None) -> jax.Array:
    """(s, a), and with tasks stored the task id as a last coordinate, which ``rebuild``
    never rescales: rows of different tasks are then 1e4 apart, so neighbours (and
    clusters) stay within a task."""
    d = storage.data
    cols = [d.obs, d.action] + ([d.extra["task"].astype(d.obs.dtype)[:, None]] if "task" in d.extra else [])
    return jnp.concatenate([c if rows is None else c[rows] for c in cols], axis=-1)



def normalise(cl: Clusters, x: jax.Array) -> jax.Array:
    return (x - cl.mean) / cl.scale


def sq_dists(q: jax.Array, c: jax.Array) -> jax.Array:
    """Squared L2 distances between the rows of q (m, d) and c (n, d), via one matmul."""
    return jnp.sum(q * q, -1)[:, None] - 2.0 * q @ c.T + jnp.sum(c * c, -1)[None, :]


def nearest(centroids: jax.Array, z: jax.Array) -> jax.Array:
    """Index of the nearest centroid for each row of z, in chunks of rows."""
    c2 = jnp.sum(centroids * centroids, -1)

    def one(zz):
        return jnp.argmin(c2[None, :] - 2.0 * zz @ centroids.T, axis=-1).astype(jnp.int32)

    if z.shape[0] <= _CHUNK:
        return one(z)
    pad = (-z.shape[0]) % _CHUNK
    zp = jnp.pad(z, ((0, pad), (0, 0))).reshape(-1, _CHUNK, z.shape[1])
    return jax.lax.map(one, zp).reshape(-1)[: z.shape[0]]


def nearest_nonempty(cl: Clusters, z: jax.Array, k: int) -> jax.Array:
    """The ``k`` nearest clusters with members, for each row of z (m, k)."""
    d2 = jnp.where(cl.count[None, :] > 0, sq_dists(z, cl.centroids), jnp.inf)
    return jax.lax.top_k(-d2, k)[1]


def rebuild(cl: Clusters, storage: Storage, key: jax.Array, iters: int, points: int) -> Clusters:
    """Refit the normalisation and the centroids, then reassign and sort every row."""
    n, C = storage.size, cl.num
    valid = jnp.arange(storage.capacity) < n
    x = features(storage)
    w = valid[:, None].astype(x.dtype)
    nf = jnp.maximum(n, 1).astype(x.dtype)
    mean = jnp.sum(x * w, 0) / nf
    std = jnp.sqrt(jnp.sum(((x - mean) * w) ** 2, 0) / nf)
    scale = jnp.where(std > 1e-6, std, 1.0)
    if "task" in storage.data.extra:  # keep tasks apart, see ``features``
        mean, scale = mean.at[-1].set(0.0), scale.at[-1].set(1.0 / TASK_SEPARATION)
    z = (x - mean) / scale

    k_init, k_fit = jax.random.split(key)
    seeds = z[jax.random.randint(k_init, (C,), 0, jnp.maximum(n, 1))]
    previous = (cl.centroids * cl.scale + cl.mean - mean) / scale  # old centroids, new normalisation
    cent = jnp.where(cl.built, previous, seeds)
    zs = z[jax.random.randint(k_fit, (min(points, storage.capacity),), 0, jnp.maximum(n, 1))]

    def lloyd(_, c):
        lab = nearest(c, zs)
        sums = jax.ops.segment_sum(zs, lab, C)
        cnt = jax.ops.segment_sum(jnp.ones_like(lab, zs.dtype), lab, C)
        return jnp.where(cnt[:, None] > 0, sums / jnp.maximum(cnt, 1.0)[:, None], c)

    cent = jax.lax.fori_loop(0, iters, lloyd, cent)
    label = jnp.where(valid, nearest(cent, z), C)
    order = jnp.argsort(label, stable=True).astype(jnp.int32)
    count = jnp.bincount(label, length=C + 1)[:C].astype(jnp.int32)
    start = (jnp.cumsum(count) - count).astype(jnp.int32)
    return Clusters(mean=mean, scale=scale, centroids=cent, label=label, order=order, start=start, count=count,
                    built=n > 0)
