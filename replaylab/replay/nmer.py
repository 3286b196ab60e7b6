"""NMER, Neighborhood Mixup Experience Replay (Sander et al., L4DC 2022, arXiv 2205.09117).

    i ~ uniform over the buffer
    j ~ uniform over the k nearest neighbours of i in (s, a) space, i excluded,
        each dimension divided by its standard deviation
    lam ~ Beta(alpha, alpha), one per row
    row = lam * T_i + (1 - lam) * T_j    for s, a, r and s';  terminated from i
    a pair that touches a true terminal stays the real T_i;
    with probability 1 - p_interp a row stays the real T_i

Keeping neighbours fresh without per-batch kNN (which costs 20-300 updates' worth of time
on a CPU): a neighbour table ``nbrs[N, k]`` is read at sampling time, so a batch costs
one gather. The table is kept up to date this way:

- Rebuild, every ``refresh_every`` env steps (default: every 5% of the capacity, at least
  1000) and just before learning starts: refit the scaling and k-means (``clusters.py``),
  sort the rows by cluster, then for every tile of 256 rows in that order compute the
  exact k nearest neighbours among the candidates: ``window`` rows, slices of the sorted
  order around the ``probes`` clusters nearest to the tile's cluster, plus each row's
  previous list and its previous neighbours' lists (one step of NN-descent, Dong et al.
  2011). A row's list therefore never gets worse from one rebuild to the next (for a
  fixed scaling, while its neighbours stay in the buffer) and its recall rises with each
  rebuild the row lives through. When the buffer holds at most ``window`` rows the
  windows cover it: the lists are the exact kNN.
- On insertion: a new row gets its list at once, from the windows around its nearest
  clusters. Rows written since the last rebuild are in no older row's list yet: that is
  the staleness bound, at most ``refresh_every`` steps.
- Wrap-around: a partner row overwritten after the list was computed is detected by
  write stamps and the sample stays real, so a stale table never mixes unrelated rows.

On larger buffers the lists are approximate. Measured on 100k real HalfCheetah rows
(``benchmarks/augment_overhead.py --nmer-index 100000``): recall@10 is 0.35 after one
rebuild (in 23 dimensions distances concentrate: many rows are almost as close as the
true 10th neighbour), 0.58 after three and 0.78 after six; the listed neighbours are on
median 1.06x, 1.03x, then 1.01x as far as the exact 10 nearest, while a random row is
2.1x as far.

The original (rmsander/interreplay) queried an exact FAISS index on every step, but
added rows under the scaling in force when they were inserted and never rescaled old
ones; here the scaling and the lists are rebuilt together. Its ``prob_interpolation``
used an integer mask (wrong rows); here it is a Bernoulli mask per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.params import opt
from replaylab.replay import clusters as cl
from replaylab.replay.mixing import beta, pair_or_real
from replaylab.replay.sampler import Sampler, auto_interval
from replaylab.replay.storage import gather

TILE = 256  # rows whose lists are computed together during a rebuild


@struct.dataclass
class NMERState:
    clusters: cl.Clusters
    nbrs: jax.Array  # (N, k) neighbour rows, -1 for none
    listed_at: jax.Array  # (N,) add count when the row's list was computed
    written_at: jax.Array  # (N,) add count when the row was written; a partner is
    #                        valid while written_at[partner] <= listed_at[row]
    adds: jax.Array  # () transitions added so far


def in_windows(position, starts, width: int, n) -> jax.Array:
    """Whether a sorted-order ``position`` (any shape) lies in one of the windows."""
    p = position[..., None]
    return jnp.any((p >= starts) & (p < starts + width), axis=-1) & (position < n)


def window_candidates(storage, clusters, zq, q_rows, starts, width: int, sorted_z=None):
    """Squared distances (m, P * width) from each query to the rows in the windows
    [start, start + width) of the sorted order, and those rows; inf where not a candidate.

    ``sorted_z`` (the scaled features in cluster order, padded by ``width`` rows) turns the
    candidate gathers into contiguous slices; a rebuild passes it, an insertion does not."""
    pos = (starts[:, None] + jnp.arange(width)[None, :]).reshape(-1)
    probe = jnp.repeat(jnp.arange(starts.shape[0]), width)
    earlier = in_windows(pos, jnp.where(jnp.arange(starts.shape[0])[None, :] < probe[:, None], starts, -width),
                         width, clusters.clustered)  # also in an earlier window: a duplicate
    rows = clusters.order[jnp.minimum(pos, storage.capacity - 1)]
    if sorted_z is None:
        zc = cl.normalise(clusters, cl.features(storage, rows))
    else:
        zc = jax.vmap(lambda s0: jax.lax.dynamic_slice_in_dim(sorted_z, s0, width))(starts).reshape(-1, zq.shape[1])
    bad = ((pos >= clusters.clustered) | earlier)[None, :] | (rows[None, :] == q_rows[:, None])
    d2 = jnp.where(bad, jnp.inf, cl.sq_dists(zq, zc))
    return d2, jnp.broadcast_to(rows, d2.shape)


def listed_candidates(storage, clusters, zq, q_rows, rows, starts, width: int, position):
    """Squared distances (m, E) from each query to its own candidate ``rows`` (m, E), -1 for
    none; inf for repeats and for rows already in a window."""
    rows = jnp.sort(rows, axis=1)
    repeat = jnp.concatenate([jnp.zeros_like(rows[:, :1], bool), rows[:, 1:] == rows[:, :-1]], axis=1)
    safe = jnp.maximum(rows, 0)
    z = cl.normalise(clusters, cl.features(storage, safe))
    bad = (rows < 0) | (rows >= storage.size) | repeat | (rows == q_rows[:, None]) \
        | in_windows(position[safe], starts, width, clusters.clustered)
    return jnp.where(bad, jnp.inf, jnp.sum((z - zq[:, None, :]) ** 2, axis=-1)), rows


def k_nearest(d2, rows, q_valid, k: int) -> jax.Array:
    """The ``k`` candidates nearest to each query (-1 where fewer are left)."""
    neg, idx = jax.lax.top_k(-jnp.where(q_valid[:, None], d2, jnp.inf), k)
    return jnp.where(jnp.isfinite(neg), jnp.take_along_axis(rows, idx, 1), -1)


def probe_starts(clusters, homes, n, width: int):
    """Window starts centred on each probed cluster's slice of the sorted order."""
    centre = clusters.start[homes] + clusters.count[homes] // 2
    starts = jnp.clip(centre - width // 2, 0, jnp.maximum(n - width, 0))
    tiled = jnp.arange(homes.shape[-1]) * width  # the windows cover a small buffer exactly
    return jnp.where(n <= width * homes.shape[-1], tiled, starts)


@dataclass(frozen=True)
class NMER(Sampler):
    k: int = opt(10, "neighbours to draw the partner from (the sample itself excluded)", min=1)
    alpha: float = opt(0.75, "Beta(alpha, alpha) of the mixing coefficient", min=1e-3)
    p_interp: float = opt(1.0, "share of rows that are synthetic; the rest stay real", min=0.0, max=1.0)
    refresh_every: int = opt(0, "env steps between rebuilds of the neighbour table "
                                "(0: auto, capacity / 20 and at least 1000)", min=0)
    window: int = opt(2048, "candidate rows per neighbour search (in cluster order)", min=2)
    probes: int = opt(2, "nearest clusters searched; the window is split among them", min=1)
    cluster_size: int = opt(1024, "target rows per k-means cluster of the index", min=1)
    kmeans_iters: int = opt(5, "Lloyd iterations per rebuild (warm-started)", min=0)
    kmeans_points: int = opt(65536, "rows the k-means is fitted on per rebuild", min=1)

    @property
    def refresh_interval(self) -> int:
        return self.refresh_every or auto_interval(self.spec.capacity, 0.05)

    @property
    def num_clusters(self) -> int:
        return max(1, self.spec.capacity // self.cluster_size)

    @property
    def num_probes(self) -> int:
        return min(self.probes, self.num_clusters)

    @property
    def width(self) -> int:
        """Rows per probed window."""
        return max(self.window // self.num_probes, 1)

    def init(self, storage):
        N = storage.capacity
        return NMERState(clusters=cl.init(N, self.spec.obs_dim + self.spec.act_dim + self.spec.multi_task,
                                                   self.num_clusters),
                         nbrs=jnp.full((N, self.k), -1, jnp.int32), listed_at=jnp.zeros((N,), jnp.int32),
                         written_at=jnp.zeros((N,), jnp.int32), adds=jnp.zeros((), jnp.int32))

    def on_add(self, state, storage, row):
        c = state.clusters
        z = cl.normalise(c, cl.features(storage, row[None]))
        homes = cl.nearest_nonempty(c, z, self.num_probes)[0]
        starts = probe_starts(c, homes, c.clustered, self.width)
        d2, rows = window_candidates(storage, c, z, row[None], starts, self.width)
        lst = k_nearest(d2, rows, c.built[None], self.k)[0]
        t = state.adds + 1
        return state.replace(nbrs=state.nbrs.at[row].set(lst), listed_at=state.listed_at.at[row].set(t),
                             written_at=state.written_at.at[row].set(t), adds=t)

    def refresh(self, state, storage, key):
        c = cl.rebuild(state.clusters, storage, key, self.kmeans_iters, self.kmeans_points)
        n, N = c.clustered, storage.capacity
        near = cl.nearest_nonempty(c, c.centroids, self.num_probes)  # each cluster's nearest clusters
        pad = self.num_probes * self.width + TILE
        sorted_z = jnp.pad(cl.normalise(c, cl.features(storage, c.order)), ((0, pad), (0, 0)))
        position = jnp.zeros((N,), jnp.int32).at[c.order].set(jnp.arange(N, dtype=jnp.int32))
        old = state.nbrs

        def tile(t, nbrs):
            pos = t * TILE + jnp.arange(TILE)
            q_valid = pos < n
            q_rows = c.order[jnp.minimum(pos, N - 1)]
            middle = c.label[c.order[jnp.minimum(t * TILE + TILE // 2, jnp.maximum(n - 1, 0))]]
            starts = probe_starts(c, near[jnp.minimum(middle, c.num - 1)], n, self.width)
            zq = jax.lax.dynamic_slice_in_dim(sorted_z, t * TILE, TILE)
            first = old[q_rows]
            second = old[jnp.maximum(first, 0)]
            second = jnp.where(first[..., None] >= 0, second, -1).reshape(TILE, -1)
            d2, rows = window_candidates(storage, c, zq, q_rows, starts, self.width, sorted_z)
            d2_l, rows_l = listed_candidates(storage, c, zq, q_rows, jnp.concatenate([first, second], axis=1),
                                             starts, self.width, position)
            lists = k_nearest(jnp.concatenate([d2, d2_l], 1), jnp.concatenate([rows, rows_l], 1), q_valid, self.k)
            return nbrs.at[jnp.where(q_valid, q_rows, N)].set(lists, mode="drop")

        nbrs = jax.lax.fori_loop(0, (n + TILE - 1) // TILE, tile, state.nbrs)
        return state.replace(clusters=c, nbrs=nbrs, listed_at=jnp.full_like(state.listed_at, state.adds))

    def augment(self, state, storage, rows, key, pool):
        n = rows.shape[0]
        k_pick, k_lam, k_real = jax.random.split(key, 3)
        partner = state.nbrs[rows, jax.random.randint(k_pick, (n,), 0, self.k)]
        safe, valid = listed_partners(state, rows, partner)
        synthetic = jax.random.uniform(k_real, (n,)) < self.p_interp
        return pair_or_real(gather(storage, rows), gather(storage, safe), beta(k_lam, self.alpha, n),
                            valid & synthetic & pool.same_pool(rows, safe))


def listed_partners(state: NMERState, rows: jax.Array, partners: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``partners`` (rows' listed neighbours, -1 for none) as safe row indices, and which
    are valid: listed, and not overwritten since ``rows``' lists were made."""
    safe = jnp.maximum(partners, 0)
    listed_at = state.listed_at[rows].reshape(rows.shape + (1,) * (partners.ndim - rows.ndim))
    return safe, (partners >= 0) & (state.written_at[safe] <= listed_at)
