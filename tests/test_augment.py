"""Property tests of the replay methods on small buffers of known data."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import replaylab
from replaylab.envs.termination import termination_rule
from replaylab.replay import clusters as cl
from replaylab.replay import storage as st
from replaylab.replay.ct import next_in_episode
from replaylab.replay.methods import SAMPLERS, make_sampler
from replaylab.replay.mixing import beta
from replaylab.replay.per import tree_find, tree_init, tree_set
from replaylab.replay.sampler import ReplaySpec
from replaylab.replay.tasks import UniformPool
from tests.conftest import checkpoint_arrays, progress_without_wall_clock

OBS, ACT = 3, 2


def compiled_sample(method, n: int):
    """The method's compiled ``sample`` of ``n`` rows from the whole buffer."""
    return jax.jit(lambda state, s, key: method.sample(state, s, key, UniformPool(s, n)))


def filled(n: int, capacity: int | None = None, episode_len: int = 50, terminal_every: int = 0, seed: int = 0):
    """A storage holding ``n`` random transitions in episodes of ``episode_len`` steps."""
    rng = np.random.default_rng(seed)
    capacity = capacity or n
    s = st.init(capacity, OBS, ACT)
    i = np.arange(n)
    term = np.zeros(n, bool) if not terminal_every else (i % terminal_every == terminal_every - 1)
    data = st.Transition(
        obs=rng.normal(size=(n, OBS)).astype(np.float32) * np.array([1.0, 5.0, 0.1], np.float32),
        action=rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32), next_obs=rng.normal(size=(n, OBS)).astype(np.float32),
        terminated=term, episode=(i // episode_len).astype(np.int32), step=(i % episode_len).astype(np.int32))
    put = lambda buf, x: buf.at[:n].set(x)
    return st.Storage(data=jax.tree.map(put, s.data, data), size=jnp.asarray(n, jnp.int32),
                      ptr=jnp.asarray(n % capacity, jnp.int32))


def sampler(name: str, capacity: int, env_id: str = "", **params):
    return make_sampler(name, params, ReplaySpec(OBS, ACT, capacity, termination_rule(env_id)))


def brute_knn(storage, clusters, rows, k):
    """Brute-force k nearest neighbours (self excluded) in the index's normalised space."""
    n = int(storage.size)
    z = np.asarray(cl.normalise(clusters, cl.features(storage)))[:n].astype(np.float64)
    d = ((z[rows, None, :] - z[None, :, :]) ** 2).sum(-1)
    d[np.arange(len(rows)), rows] = np.inf
    return np.sort(d, axis=1)[:, :k], d


def _vec(t):
    return np.concatenate([np.asarray(t.obs), np.asarray(t.action), np.asarray(t.reward)[:, None],
                           np.asarray(t.next_obs)], axis=1).astype(np.float64)


def solve_lambda(batch, a, b):
    """Per-row least-squares lambda such that row = lam * a + (1 - lam) * b."""
    x, va, vb = _vec(batch), _vec(a), _vec(b)
    return ((x - vb) * (va - vb)).sum(1) / np.maximum(((va - vb) ** 2).sum(1), 1e-30)


def assert_on_segment(batch, a, b, lam):
    """Every mixed field equals lam * a + (1 - lam) * b with the same lam for the whole row."""
    for f in ("obs", "action", "reward", "next_obs"):
        x, xa, xb = (np.asarray(getattr(t, f)) for t in (batch, a, b))
        w = lam.reshape((-1,) + (1,) * (x.ndim - 1))
        np.testing.assert_allclose(x, w * xa + (1 - w) * xb, atol=2e-5, err_msg=f)
    assert np.all((lam >= -1e-6) & (lam <= 1 + 1e-6))


# -- NMER ------------------------------------------------------------------------------

def test_nmer_lists_are_the_true_k_nearest_neighbours_after_a_rebuild_and_on_insertion():
    k = 5
    s = filled(600, capacity=700)
    nm = sampler("nmer", 700, k=k, cluster_size=64)
    state = jax.jit(nm.refresh)(nm.init(s), s, jax.random.PRNGKey(0))
    nbrs = np.asarray(state.nbrs)[:600]
    true, d = brute_knn(s, state.clusters, np.arange(600), k)
    found = np.sort(np.take_along_axis(d, nbrs, axis=1), axis=1)
    np.testing.assert_allclose(found, true, rtol=1e-4)  # same distances: the exact kNN

    # 50 new rows get their lists on insertion, against the rows clustered at the rebuild
    more = filled(650, capacity=700, seed=1)
    s2 = s.replace(data=jax.tree.map(lambda a, b: a.at[600:650].set(b[600:650]), s.data, more.data),
                   size=jnp.asarray(650, jnp.int32), ptr=jnp.asarray(650, jnp.int32))
    on_add = jax.jit(nm.on_add)
    for r in range(600, 650):
        state = on_add(state, s2, jnp.asarray(r, jnp.int32))
    _, d2 = brute_knn(s2, state.clusters, np.arange(600, 650), k)
    d2[:, 600:] = np.inf  # not yet in the index: the documented staleness
    new = np.asarray(state.nbrs)[600:650]
    np.testing.assert_allclose(np.sort(np.take_along_axis(d2, new, 1), 1), np.sort(d2, 1)[:, :k], rtol=1e-4)


def test_nmer_rebuilds_refine_approximate_lists_with_neighbours_of_neighbours():
    """On a buffer larger than the window, each rebuild searches the windows plus the old
    lists and the old neighbours' lists: no row's list gets worse, recall rises."""
    k, n = 5, 3000
    s = filled(n)
    nm = sampler("nmer", n, k=k, cluster_size=64, window=256)
    refresh = jax.jit(nm.refresh)
    state = nm.init(s)
    rows = np.arange(0, n, 10)
    sums, recalls = [], []
    for i in range(4):
        state = refresh(state, s, jax.random.PRNGKey(i))
        nbrs = np.asarray(state.nbrs)[rows]
        true, d = brute_knn(s, state.clusters, rows, k)
        assert np.all(nbrs >= 0) and not np.any(nbrs == rows[:, None])
        assert all(len(set(r)) == k for r in nbrs.tolist())  # no duplicates
        found = np.take_along_axis(d, nbrs, axis=1)
        sums.append(found.sum(1))
        recalls.append(np.mean(np.sort(found, 1)[:, -1] <= true[:, -1] * (1 + 1e-5)))
    for before, after in zip(sums, sums[1:]):
        assert np.all(after <= before * (1 + 1e-5))
    assert recalls[-1] >= recalls[0] + 0.2, recalls


def nmer_batch(s, n=4096, alpha=0.75, **params):
    nm = sampler("nmer", s.capacity, k=5, alpha=alpha, **params)
    state = jax.jit(nm.refresh)(nm.init(s), s, jax.random.PRNGKey(0))
    batch, w, rows, _ = compiled_sample(nm, n)(state, s, jax.random.PRNGKey(1))
    return state, batch, np.asarray(rows)


def test_nmer_rows_mix_the_sample_with_one_of_its_neighbours_with_one_beta_lambda_per_row():
    s = filled(500)
    state, batch, rows = nmer_batch(s)
    sample = st.gather(s, rows)
    nbrs = np.asarray(state.nbrs)[rows]
    fits = []
    for col in range(nbrs.shape[1]):  # which of the k neighbours was each row mixed with?
        partner = st.gather(s, jnp.asarray(nbrs[:, col]))
        lam = solve_lambda(batch, sample, partner)
        fits.append((np.abs(_vec(batch) - (lam[:, None] * _vec(sample) + (1 - lam[:, None]) * _vec(partner))).max(1), lam))
    resid = np.stack([f[0] for f in fits], 1)
    best = resid.argmin(1)
    assert resid.min(1).max() < 1e-4, "every row is a mix of its sample and one of the sample's k neighbours"
    lams = np.stack([f[1] for f in fits], 1)[np.arange(len(rows)), best]
    partners = st.gather(s, jnp.asarray(nbrs[np.arange(len(rows)), best]))
    assert_on_segment(batch, sample, partners, lams)
    np.testing.assert_array_equal(np.asarray(batch.terminated), np.asarray(sample.terminated))
    # lambda ~ Beta(0.75, 0.75): mean 1/2, variance 1 / (4 (2 alpha + 1)) = 0.1
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 0.1) < 0.01


@pytest.mark.parametrize("alpha", [0.4, 0.75, 2.0, 8.0])
def test_mixing_coefficients_follow_beta_alpha_alpha(alpha):
    """Our Gamma-ratio sampler against the exact Beta CDF (Kolmogorov-Smirnov), under vmap."""
    from scipy import stats

    lam = np.asarray(jax.jit(jax.vmap(lambda k: beta(k, alpha, 10_000)))(jax.random.split(jax.random.PRNGKey(3), 2)))
    assert np.all((lam >= 0) & (lam <= 1))
    for row in lam:
        assert stats.kstest(row, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    assert not np.array_equal(lam[0], lam[1])


def test_nmer_pairs_that_touch_a_terminal_stay_real_and_p_interp_keeps_a_real_share():
    s = filled(500, terminal_every=7)
    state, batch, rows = nmer_batch(s)
    sample = st.gather(s, rows)
    term = np.asarray(s.data.terminated)
    touches = term[rows] | term[np.asarray(state.nbrs)[rows]].any(1)
    real = np.all(np.asarray(batch.obs) == np.asarray(sample.obs), axis=1)
    assert real[term[rows]].all()  # a terminal sample is always real
    assert not real[~touches].any()  # no pair away from terminals is left real
    s = filled(500)
    _, batch, rows = nmer_batch(s, p_interp=0.3)
    real = np.all(np.asarray(batch.obs) == np.asarray(st.gather(s, rows).obs), axis=1)
    assert abs(real.mean() - 0.7) < 0.03


# -- the other mixup methods ------------------------------------------------------------

def draw(name, s, n=2048, **params):
    sm = sampler(name, s.capacity, **params)
    state = sm.init(s)
    if sm.refresh_interval:
        state = jax.jit(sm.refresh)(state, s, jax.random.PRNGKey(0))
    batch, w, rows, _ = compiled_sample(sm, n)(state, s, jax.random.PRNGKey(1))
    return state, batch, np.asarray(w), np.asarray(rows)


def test_ct_partner_is_the_next_step_of_the_episode_and_the_sample_itself_at_its_end():
    s = filled(500, episode_len=20)
    rows = jnp.arange(499)
    nxt = np.asarray(next_in_episode(s, rows))
    ends = np.asarray(s.data.step)[:499] == 19
    np.testing.assert_array_equal(nxt[~ends], np.arange(499)[~ends] + 1)
    np.testing.assert_array_equal(nxt[ends], np.arange(499)[ends])
    assert int(next_in_episode(s, jnp.asarray([499]))[0]) == 499  # the newest row has no successor yet
    _, batch, _, rows = draw("ct", s)
    sample, partner = st.gather(s, rows), st.gather(s, next_in_episode(s, jnp.asarray(rows)))
    end = np.asarray(next_in_episode(s, jnp.asarray(rows))) == rows
    lam = solve_lambda(batch, sample, partner)
    lam[end] = 1.0
    assert_on_segment(batch, sample, partner, lam)


def test_s4rl_mixes_only_the_state_with_its_own_next_state():
    s = filled(300)
    _, batch, _, rows = draw("s4rl", s)
    sample = st.gather(s, rows)
    for f in ("action", "reward", "next_obs", "terminated"):
        np.testing.assert_array_equal(np.asarray(getattr(batch, f)), np.asarray(getattr(sample, f)))
    lam = (np.asarray(batch.obs) - np.asarray(sample.next_obs)) / (np.asarray(sample.obs) - np.asarray(sample.next_obs))
    np.testing.assert_allclose(lam, lam[:, :1].repeat(OBS, 1), atol=1e-3)
    assert np.all((lam > -1e-4) & (lam < 1 + 1e-4))


def test_noise_is_multiplicative_per_row_by_default_and_per_batch_on_request():
    s = filled(300)
    _, batch, _, rows = draw("noise", s, sigma=0.1)
    eps = np.asarray(batch.obs) / np.asarray(st.gather(s, rows).obs) - 1
    assert abs(eps.std() - 0.1) < 0.01 and eps[:, 0].std() > 0.05  # differs across rows
    _, batch, _, rows = draw("noise", s, sigma=0.1, per_batch=True)
    eps = np.asarray(batch.obs) / np.asarray(st.gather(s, rows).obs) - 1
    np.testing.assert_allclose(eps, eps[:1].repeat(len(eps), 0), atol=1e-5)


# -- PER ------------------------------------------------------------------------------

def test_per_frequencies_follow_priority_to_the_alpha_and_weights_match_a_reference():
    n, alpha, beta = 8, 0.6, 0.4
    s = filled(n)
    per = sampler("per", n, alpha=alpha, beta=beta, eps=0.0)
    td = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 0.2, 3.0, 1.5], np.float32)
    state = per.update(per.init(s), jnp.arange(n), jnp.asarray(td))
    sample = compiled_sample(per, 256)
    counts = np.zeros(n)
    key = jax.random.PRNGKey(0)
    for _ in range(200):
        key, k = jax.random.split(key)
        _, w, rows, _ = sample(state, s, k)
        counts += np.bincount(np.asarray(rows), minlength=n)
    p = td**alpha / (td**alpha).sum()
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.005)
    rows, w = np.asarray(rows), np.asarray(w)
    ref = (n * p[rows]) ** -beta
    np.testing.assert_allclose(w, ref / ref.max(), rtol=1e-4)


def test_per_sum_tree_holds_prefix_sums_and_new_rows_get_the_max_priority():
    tree = tree_set(tree_init(5), jnp.arange(5), jnp.asarray([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert float(tree.total) == 15.0
    for parent, child in zip(tree.levels[:-1], tree.levels[1:]):
        np.testing.assert_array_equal(np.asarray(parent), np.asarray(child).reshape(-1, 2).sum(1))
    rows, value = tree_find(tree_set(tree_init(4), jnp.arange(4), jnp.asarray([1.0, 2.0, 0.0, 3.0])),
                            jnp.asarray([0.0, 0.99, 1.0, 2.99, 3.0, 5.99, 100.0]))
    assert np.asarray(rows).tolist() == [0, 0, 1, 1, 3, 3, 3]  # never the empty leaf 2, even past the total
    np.testing.assert_array_equal(np.asarray(value), [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0])
    per = sampler("per", 5)
    s = filled(5)
    state = per.update(per.init(s), jnp.asarray([0]), jnp.asarray([9.0]))
    state = per.on_add(state, s, jnp.asarray(3))
    leaves = np.asarray(state.tree.leaves)[:5]
    assert leaves[3] == pytest.approx((9.0 + 1e-6) ** 0.6)


# -- LCER ------------------------------------------------------------------------------

def test_lcer_assignments_are_the_nearest_centroids_and_rm_partners_share_a_cluster():
    s = filled(800)
    state, batch, _, p = draw("lcer_rm", s, clusters=12)
    c = state.clusters
    z = np.asarray(cl.normalise(c, cl.features(s)))[:800]
    cent = np.asarray(c.centroids)
    nearest = ((z[:, None] - cent[None]) ** 2).sum(-1).argmin(1)
    label = np.asarray(c.label)[:800]
    assert (label == nearest).mean() > 0.999  # float ties aside
    # each synthetic row mixes two members of one cluster: recover q from the action
    members = {int(k): np.nonzero(label == k)[0] for k in np.unique(label)}
    act, a_all = np.asarray(batch.action), np.asarray(s.data.action)
    for b in range(200):
        lp = label[p[b]]
        cand = members[lp]
        lam = (act[b, 0] - a_all[cand, 0]) / (a_all[p[b], 0] - a_all[cand, 0] + 1e-12)
        fit = np.abs(lam[:, None] * a_all[p[b]] + (1 - lam[:, None]) * a_all[cand] - act[b]).max(1)
        assert fit.min() < 1e-4 or np.allclose(act[b], a_all[p[b]]), "partner q is in p's cluster"


def test_lcer_cc_mixes_with_the_cluster_centre_and_recomputes_termination():
    s = filled(800)
    state, batch, _, rows = draw("lcer_cc", s, clusters=6, noise=0.0, env_id="InvertedPendulum-v5")
    c = state.clusters
    sample = st.gather(s, rows)
    home = np.asarray(cl.nearest(c.centroids, cl.normalise(c, cl.features(s, jnp.asarray(rows)))))
    mu = np.asarray(state.centre_mean)[home]
    label = np.asarray(c.label)[:800]
    obs = np.asarray(s.data.obs)[:800]
    np.testing.assert_allclose(mu[:, :OBS], np.stack([obs[label == h].mean(0) for h in home]), atol=1e-4)
    centre = sample.replace(obs=jnp.asarray(mu[:, :OBS]), action=jnp.clip(mu[:, OBS:OBS + ACT], -1, 1),
                            reward=jnp.asarray(mu[:, OBS + ACT]), next_obs=jnp.asarray(mu[:, OBS + ACT + 1:]))
    assert_on_segment(batch, sample, centre, solve_lambda(batch, sample, centre))
    expect = ~(np.abs(np.asarray(batch.next_obs)[:, 1]) <= 0.2)
    np.testing.assert_array_equal(np.asarray(batch.terminated), expect)


# -- every method: vmapped seeds and exact resume ---------------------------------------

@pytest.mark.parametrize("method", [m for m in SAMPLERS if m != "uniform"])
def test_every_method_trains_two_vmapped_seeds_and_resumes_exactly(method, small, tmp_path):
    params = {"replay.refresh_every": 50} if method in ("nmer", "lcer_cc", "lcer_rm") else {}
    cfg = small(env="Hopper-v5", replay=method, seeds=2, replay_ratio=2, total_steps=300, warmup_steps=100,
                checkpoint_interval=150, eval_interval=150, eval_episodes=1, buffer_size=250, **{
                    k.replace(".", "__"): v for k, v in params.items()})
    full = replaylab.train(cfg)
    assert np.all(np.isfinite(full.final_returns))
    # resume from the mid-run checkpoint in a copy of the run directory
    cut = tmp_path / "cut"
    shutil.copytree(cfg["run_dir"], cut)
    shutil.rmtree(max((cut / "checkpoints").glob("step_*")))
    replaylab.resume(cut)
    a, b = checkpoint_arrays(cfg["run_dir"]), checkpoint_arrays(cut)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert progress_without_wall_clock(cfg["run_dir"]) == progress_without_wall_clock(cut)


def test_lcer_rm_ignores_members_overwritten_since_the_refit_with_a_transition_of_another_cluster():
    s = filled(400)
    rm = sampler("lcer_rm", 400, clusters=4)
    state = jax.jit(rm.refresh)(rm.init(s), s, jax.random.PRNGKey(0))
    c0 = state.clusters
    listed_in = np.empty(400, int)  # the cluster whose member list holds each row (refit)
    for h in range(4):
        start, count = int(c0.start[h]), int(c0.count[h])
        listed_in[np.asarray(c0.order)[start:start + count]] = h
    # overwrite every other row with a far-away transition, labelled on insertion as the loop does
    rows = np.arange(0, 400, 2)
    far = s.data.replace(obs=s.data.obs.at[rows].set(100.0), action=s.data.action.at[rows].set(1.0))
    s2 = s.replace(data=far)
    on_add = jax.jit(rm.on_add)
    for r in rows:
        state = on_add(state, s2, jnp.asarray(r, jnp.int32))
    label = np.asarray(state.clusters.label)
    moved = label != listed_in  # rows now holding a transition of another cluster
    assert moved.sum() > 50
    batch, _, p, _ = compiled_sample(rm, 4096)(state, s2, jax.random.PRNGKey(1))
    p = np.asarray(p)
    mixed = ~np.all(np.asarray(batch.obs) == np.asarray(s2.data.obs)[p], axis=1)
    assert mixed.mean() > 0.3
    assert not moved[p[mixed]].any(), "a moved row was mixed as a member of its old cluster"
