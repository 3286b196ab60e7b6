"""BIER: the GP maths against closed forms, the fitted hyper-parameters, and the batches it
makes (queries on a segment to a listed neighbour, predictions of a smooth system,
likelihood weights in (0, 1])."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from replaylab.replay import bier
from replaylab.replay import storage as st
from tests.test_augment import compiled_sample, sampler

RNG = np.random.default_rng(0)


def test_cholesky_and_triangular_solve_match_numpy():
    a = RNG.normal(size=(6, 9, 9))
    a = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(9)
    low = np.asarray(bier.cholesky(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(low, np.linalg.cholesky(a), atol=1e-4)
    b = RNG.normal(size=(6, 9, 2))
    np.testing.assert_allclose(np.asarray(bier.solve_lower(jnp.asarray(low), jnp.asarray(b, jnp.float32))),
                               np.linalg.solve(low, b), atol=1e-4)


def _kernel(a, b, ls, sf2):
    return sf2 * np.exp(-0.5 * (((a[:, None] - b[None]) / ls) ** 2).sum(-1))


def test_gp_posterior_and_marginal_likelihood_match_the_closed_form():
    x = RNG.uniform(size=(4, 11, 3)).astype(np.float32)
    y = RNG.normal(size=(4, 11, 2)).astype(np.float32)
    xq = RNG.uniform(size=(4, 3)).astype(np.float32)
    ls = np.array([0.3, 0.7, 1.5])
    params = {"log_ls": jnp.log(jnp.broadcast_to(jnp.asarray(ls, jnp.float32), (4, 3))),
              "log_sf2": jnp.full((4,), np.log(1.3), jnp.float32), "raw_sn2": jnp.full((4,), -3.0)}
    sn2 = float(bier.noise(jnp.asarray(-3.0)))
    mean, var = bier.predict(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(xq))
    nll = bier.neg_log_marginal(params, jnp.asarray(x), jnp.asarray(y))
    for i in range(4):
        k = _kernel(x[i], x[i], ls, 1.3) + sn2 * np.eye(11)
        ks = _kernel(x[i], xq[i][None], ls, 1.3)[:, 0]
        np.testing.assert_allclose(np.asarray(mean[i]), ks @ np.linalg.solve(k, y[i]), rtol=1e-3, atol=1e-4)
        assert abs(float(var[i]) - (1.3 - ks @ np.linalg.solve(k, ks) + sn2)) < 1e-4
        expected = sum(0.5 * y[i][:, o] @ np.linalg.solve(k, y[i][:, o]) + 0.5 * np.linalg.slogdet(k)[1]
                       + 5.5 * np.log(2 * np.pi) for o in range(2))
        assert abs(float(nll[i]) - expected) < 1e-3 * abs(expected)
    # one training point: mean = k(q, x0) / (sf2 + sn2) * y0, var = sf2 - k^2 / (sf2 + sn2) + sn2
    one = {k: v[:1] for k, v in params.items()}
    m1, v1 = bier.predict(one, jnp.asarray(x[:1, :1]), jnp.asarray(y[:1, :1]), jnp.asarray(xq[:1]))
    kq = _kernel(xq[0][None], x[0, :1], ls, 1.3)[0, 0]
    np.testing.assert_allclose(np.asarray(m1[0]), kq / (1.3 + sn2) * y[0, 0], rtol=1e-4)
    assert abs(float(v1[0]) - (1.3 - kq ** 2 / (1.3 + sn2) + sn2)) < 1e-5


def test_fitting_raises_the_marginal_likelihood_and_finds_the_relevant_input():
    # y depends on input 0 only: its lengthscale must come out shorter than input 1's
    x = RNG.uniform(size=(32, 11, 2)).astype(np.float32)
    y = np.sin(4 * x[..., :1]).astype(np.float32)
    p0 = bier.initial_hypers((32,), 2)
    p = bier.fit(jnp.asarray(x), jnp.asarray(y), 50, 0.1)
    before = bier.neg_log_marginal(p0, jnp.asarray(x), jnp.asarray(y))
    after = bier.neg_log_marginal(p, jnp.asarray(x), jnp.asarray(y))
    assert np.all(np.asarray(after) < np.asarray(before))
    ls = np.exp(np.asarray(p["log_ls"]))
    assert np.median(ls[:, 0]) < 0.5 * np.median(ls[:, 1])


def _reward(s, a):
    return np.sin(3 * s[:, 0]) * np.cos(3 * a[:, 0]) + s[:, 1] ** 2


def _delta(s, a):
    return 0.1 * np.stack([np.sin(3 * a[:, 0]), a[:, 1] * s[:, 0], s[:, 2] ** 2], 1)


def _smooth_buffer(n: int):
    """obs (3), action (2) uniform; reward and s' - s smooth, curved functions of (s, a)."""
    s = RNG.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    a = RNG.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    r = _reward(s, a).astype(np.float32)
    nxt = (s + _delta(s, a)).astype(np.float32)
    storage = st.init(n, 3, 2)
    data = st.Transition(obs=s, action=a, reward=r, next_obs=nxt, terminated=np.zeros(n, bool),
                         episode=(np.arange(n) // 100).astype(np.int32), step=(np.arange(n) % 100).astype(np.int32))
    return st.Storage(data=jax.tree.map(lambda b, v: b.at[:n].set(v), storage.data, data),
                      size=jnp.asarray(n, jnp.int32), ptr=jnp.asarray(0, jnp.int32))


def test_bier_rows_lie_between_neighbours_predict_the_system_and_carry_weights_in_0_1():
    n = 1500
    storage = _smooth_buffer(n)
    method = sampler("bier", n, k=10, p_interp=0.5)
    state = jax.jit(method.refresh)(method.init(storage), storage, jax.random.PRNGKey(0))
    batch, w, rows, _ = compiled_sample(method, 512)(state, storage, jax.random.PRNGKey(1))
    s, a = np.asarray(batch.obs), np.asarray(batch.action)
    rows = np.asarray(rows)
    real_s, real_r = np.asarray(storage.data.obs)[rows], np.asarray(storage.data.reward)
    nbrs = np.asarray(state.nmer.nbrs)[rows]
    sa_all = np.concatenate([np.asarray(storage.data.obs), np.asarray(storage.data.action)], 1)
    sa = np.concatenate([s, a], 1)
    synthetic = ~np.all(np.isclose(s, real_s), 1)
    assert 0.4 < synthetic.mean() < 0.6  # p_interp 0.5
    # each synthetic (s, a) lies on the segment from its sample to one of its listed neighbours;
    # the linear mix of that pair's rewards is what NMER would give it
    linear = np.zeros(len(rows))
    for i in np.nonzero(synthetic)[0]:
        d = sa_all[nbrs[i]] - sa_all[rows[i]]
        lam = ((sa[i] - sa_all[rows[i]]) @ d.T) / (d * d).sum(1)  # along each neighbour's segment
        resid = np.linalg.norm(sa[i] - (sa_all[rows[i]] + lam[:, None] * d), axis=1)
        b = resid.argmin()
        assert resid[b] < 1e-4 and -1e-4 <= lam[b] <= 1 + 1e-4, (i, resid[b], lam[b])
        linear[i] = real_r[rows[i]] + lam[b] * (real_r[nbrs[i, b]] - real_r[rows[i]])
    # predictions of the system at the query points: close, and closer than the linear mix
    r_true, ds_true = _reward(s, a), _delta(s, a)
    r_err = np.abs(np.asarray(batch.reward) - r_true)[synthetic]
    ds_err = np.abs(np.asarray(batch.next_obs) - s - ds_true)[synthetic]
    assert np.median(r_err) < 0.05 * np.ptp(r_true) and np.median(ds_err) < 0.05 * np.ptp(ds_true)
    assert np.median(r_err) < np.median(np.abs(linear - r_true)[synthetic])
    w = np.asarray(w)
    assert np.all((w > 0) & (w <= 1)) and np.all(w[~synthetic] == 1.0)
    assert w[synthetic].std() > 0  # the weights depend on how well each query is pinned down
