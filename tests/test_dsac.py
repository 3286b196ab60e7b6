"""DSAC's quantile critic: the loss by hand, the fractions, and that the critic learns the
quantiles (and risk measures) of a known return distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import norm

from replaylab.agents import make_agent
from replaylab.agents.config import AgentConfig
from replaylab.agents.dsac import fractions, quantile_huber
from replaylab.errors import ConfigError
from replaylab.replay.storage import Transition


def test_quantile_huber_loss_matches_a_hand_computed_case():
    # predictions 0 and 2 at fractions 0.25 and 0.75; targets 1 and 4 with mass 1/2 each.
    # pred 0: u = 1, 4 (both > 0): 0.25 * (0.5 * 0.5 + 3.5 * 0.5) = 0.5
    # pred 2: u = -1 (< 0): |0.75 - 1| * 0.5 * 0.5 = 0.0625; u = 2: 0.75 * 1.5 * 0.5 = 0.5625
    loss, abs_err = quantile_huber(jnp.array([0.0, 2.0]), jnp.array([1.0, 4.0]), jnp.array([0.25, 0.75]),
                                   jnp.array([0.5, 0.5]))
    assert float(loss) == pytest.approx((0.5 + 0.0625 + 0.5625) / 2)
    assert float(abs_err) == pytest.approx((1 + 4 + 1 + 2) / 4)


def test_fractions_are_midpoints_of_masses_that_sum_to_one():
    tau, w = fractions(jax.random.PRNGKey(0), 5, 8, "iqn")
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert (np.diff(tau, axis=-1) > 0).all() and (tau > 0).all() and (tau < 1).all()
    np.testing.assert_allclose(tau[:, 0], w[:, 0] / 2, rtol=1e-6)
    assert w.min() >= 0.1 / 1.1 / 8 * 0.99  # presum U(0, 1) + 0.1 bounds every mass away from 0
    tau, w = fractions(jax.random.PRNGKey(0), 2, 4, "fix")
    np.testing.assert_allclose(tau, [[0.125, 0.375, 0.625, 0.875]] * 2)


def _fit(risk: str = "neutral", eta: float = 0.0):
    """Train the quantile critics on one-step episodes whose return is N(2, 1) (at a
    non-zero input: with s = a = 0 the ReLU features, and with them tau's embedding, vanish)."""
    cfg = AgentConfig(hidden_sizes=(32, 32), critic_lr=1e-3, actor_lr=0.0, temperature_lr=0.0,
                      init_temperature=1e-6, risk=risk, risk_param=eta)
    agent = make_agent("dsac", 1, 1, cfg, 1)
    B = 256

    def batch(key):
        return Transition(obs=jnp.ones((B, 1)), action=jnp.full((B, 1), 0.5), reward=2.0 + jax.random.normal(key, (B,)),
                          next_obs=jnp.zeros((B, 1)), terminated=jnp.ones((B,), bool),
                          episode=jnp.zeros((B,), jnp.int32), step=jnp.zeros((B,), jnp.int32))

    @jax.jit
    def train(state, key):
        def one(s, k):
            k_batch, k_update = jax.random.split(k)
            s, metrics, td, _ = agent.update(s, batch(k_batch), jnp.ones(B), k_update, 0)
            return s, td.mean()

        return jax.lax.scan(one, state, jax.random.split(key, 4000))

    state, td = train(agent.init(jax.random.PRNGKey(1)), jax.random.PRNGKey(2))
    return agent, state, np.asarray(td)


def huber_quantiles(taus: np.ndarray) -> np.ndarray:
    """What the quantile Huber loss (kappa 1) converges to for X ~ N(2, 1): argmin_theta
    E[|tau - 1{X < theta}| Huber(X - theta)], pulled towards the mean from the quantile."""
    x = np.linspace(-8.0, 12.0, 8001)
    p = norm.pdf(x, 2.0, 1.0)
    p /= p.sum()

    def loss(theta, tau):
        u = x - theta
        return np.sum(p * np.abs(tau - (u < 0)) * np.where(np.abs(u) <= 1, 0.5 * u * u, np.abs(u) - 0.5))

    return np.array([minimize_scalar(loss, bounds=(-3.0, 7.0), args=(t,), method="bounded").x for t in taus])


def test_quantile_critic_learns_the_quantiles_and_risk_measures_of_the_return():
    agent, state, td = _fit()
    taus = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    z = np.asarray(agent.critic_net.apply(state.critic.params, jnp.ones((1, 1)), jnp.full((1, 1), 0.5),
                                          jnp.asarray(taus)[None]))
    for critic in z[:, 0]:
        np.testing.assert_allclose(critic, huber_quantiles(taus), atol=0.1)
    assert td[-100:].mean() < td[:10].mean()  # the mean |quantile error| (PER's priority) fell

    obs, act = jnp.ones((64, 1)), jnp.full((64, 1), 0.5)
    key = jax.random.PRNGKey(3)

    def value(risk, eta):
        a = make_agent("dsac", 1, 1, AgentConfig(hidden_sizes=(32, 32), risk=risk, risk_param=eta), 1)
        return float(a.policy_q(state.critic.params, obs, act, key).mean())

    grid = (np.arange(100) + 0.5) / 100  # the risk measures of the distribution the critic learns
    hq = huber_quantiles(grid)
    assert value("neutral", 0.0) == pytest.approx(hq.mean(), abs=0.1)
    assert value("cvar", 0.5) == pytest.approx(huber_quantiles(0.5 * grid).mean(), abs=0.1)  # the lower half
    assert value("wang", -0.5) == pytest.approx(huber_quantiles(norm.cdf(norm.ppf(grid) - 0.5)).mean(), abs=0.1)
    assert value("std", 1.0) == pytest.approx(hq.mean() - hq.std(), abs=0.1)
    assert value("cvar", 0.5) < value("wang", -0.5) < value("neutral", 0.0)


def test_cvar_needs_a_tail_fraction():
    with pytest.raises(ConfigError, match="agent.risk_param=0.0"):
        make_agent("dsac", 1, 1, AgentConfig(risk="cvar"), 1)
