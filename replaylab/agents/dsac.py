"""Distributional SAC (Ma et al., 2020, arXiv:2004.14547): SAC with quantile critics.

Each critic Z_i(s, a, tau) predicts the tau-quantile of the soft return, with tau
embedded as in IQN (``networks.QuantileCritics``). One update:

1. fractions: tau_hat (B, N) with weights w, fresh for the prediction and for the target
   ('iqn': w = normalised U(0, 1) + 0.1, tau_hat the midpoints of cumsum(w); 'fix': 1/N);
2. critic:  a' ~ pi'(.|s') (a target policy),
            y_j = r + gamma (1 - terminated) (min_i Z'_i(s', a', tau'_j) - alpha log pi'(a'|s'))
            loss = sum_i mean_b w_b mean_k sum_j w'_j rho_tau_k(y_j - Z_i(s, a, tau_k)),
            rho_tau(u) = |tau - 1{u < 0}| Huber_1(u)   (the quantile Huber loss)
3. targets: Z' <- (1 - tau) Z' + tau Z, and the target policy likewise after the actor;
4. actor (every ``policy_delay`` updates): loss = mean_b alpha log pi(a|s) - min_i Q_i(s, a)
   with Q_i = sum_k w_k Z_i(s, a, g(tau_k)), g the risk distortion ('neutral': none;
   'cvar': eta tau; 'wang': Phi(Phi^-1(tau) + eta)); 'std' uses mean - eta * std instead;
5. temperature as in SAC.

Prioritised replay uses the mean absolute quantile error |y_j - Z_i(s, a, tau_k)| as a
row's TD error. The original (DMRLAD's ``dsac.py``) kept one Adam optimiser per critic;
an ensemble under one optimiser is the same update, since Adam is per-parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct
from jax.scipy.stats import norm

from replaylab.agents.base import apply_grads, batch_mean, polyak
from replaylab.agents.networks import QuantileCritics, sample_tanh_gaussian
from replaylab.agents.sac import SAC, SACState
from replaylab.errors import ConfigError


@struct.dataclass
class DSACState(SACState):
    target_actor: dict = None


def fractions(key: jax.Array, batch: int, n: int, kind: str) -> tuple[jax.Array, jax.Array]:
    """(tau_hat, w), both (batch, n): quantile midpoints and the probability mass of each."""
    if kind == "fix":
        w = jnp.full((batch, n), 1.0 / n, jnp.float32)
    else:
        presum = jax.random.uniform(key, (batch, n)) + 0.1
        w = presum / presum.sum(-1, keepdims=True)
    return jnp.cumsum(w, -1) - 0.5 * w, w


def quantile_huber(pred: jax.Array, target: jax.Array, tau: jax.Array, weight: jax.Array,
                   kappa: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Quantile Huber loss of predictions ``pred`` (..., N) at fractions ``tau`` (..., N)
    against target samples ``target`` (..., M) with masses ``weight`` (..., M): the mean over
    the N predictions of the weighted sum over the targets; and the mean |error|."""
    u = target[..., None, :] - pred[..., :, None]  # (..., N, M)
    abs_u = jnp.abs(u)
    huber = jnp.where(abs_u <= kappa, 0.5 * u**2, kappa * (abs_u - 0.5 * kappa))
    rho = jnp.abs(tau[..., :, None] - (u < 0).astype(u.dtype)) * huber * weight[..., None, :]
    return rho.sum(-1).mean(-1), abs_u.mean((-1, -2))


@dataclass(frozen=True)
class DSAC(SAC):
    def __post_init__(self):
        risk, eta = self.cfg.risk, self.cfg.risk_param
        if risk == "cvar" and not 0.0 < eta <= 1.0:
            raise ConfigError(f"agent.risk_param={eta}: risk=cvar needs a tail fraction in (0, 1]")

    @property
    def critic_net(self) -> QuantileCritics:
        c = self.cfg
        return QuantileCritics(c.num_critics, c.hidden_sizes, c.quantile_embedding, c.activation, c.layer_norm)

    def _fractions(self, key: jax.Array, batch: int):
        return fractions(key, batch, self.cfg.num_quantiles, self.cfg.fractions)

    def critic_example(self) -> tuple[jax.Array, ...]:
        return super().critic_example() + (jnp.full((1, self.cfg.num_quantiles), 0.5),)

    def init(self, key: jax.Array) -> DSACState:
        s = super().init(key)
        return DSACState(actor=s.actor, critic=s.critic, target_critic=s.target_critic, log_alpha=s.log_alpha,
                         target_actor=s.actor.params)

    def policy_q(self, critic_params, obs: jax.Array, action: jax.Array, key: jax.Array) -> jax.Array:
        """(B,) min over the critics of the risk measure of Z(s, a, .)."""
        tau, w = self._fractions(key, obs.shape[0])
        risk, eta = self.cfg.risk, self.cfg.risk_param
        if risk == "cvar":
            tau = eta * tau
        elif risk == "wang":
            tau = norm.cdf(norm.ppf(tau) + eta)
        z = self.critic_net.apply(critic_params, obs, action, tau)  # (C, B, N)
        mean = (w * z).sum(-1)
        if risk == "std":
            mean = mean - eta * jnp.sqrt((w * (z - mean[..., None]) ** 2).sum(-1) + 1e-8)
        return mean.min(0)

    def critic_step(self, state: DSACState, batch, weights, key, alpha):
        k_next, k_tau, k_tau_next = jax.random.split(key, 3)
        B = batch.reward.shape[0]
        mean, log_std = self.actor_net.apply(state.target_actor, batch.next_obs)
        next_action, next_logp = sample_tanh_gaussian(mean, log_std, k_next)
        tau_next, w_next = self._fractions(k_tau_next, B)
        next_z = self.critic_net.apply(state.target_critic, batch.next_obs, next_action, tau_next).min(0)
        not_done = 1.0 - batch.terminated.astype(jnp.float32)
        y = batch.reward[:, None] + self.cfg.gamma * not_done[:, None] * (next_z - alpha * next_logp[:, None])
        y = jax.lax.stop_gradient(y)
        tau, _ = self._fractions(k_tau, B)

        def critic_loss(params, obs):
            z = self.critic_net.apply(params, obs, batch.action, tau)  # (C, B, N)
            loss, abs_err = quantile_huber(z, y, tau, w_next)  # (C, B)
            return batch_mean(loss.sum(0), weights), (z, abs_err)

        (c_loss, (z, abs_err)), (grads, obs_grad) = self.critic_value_and_grad(critic_loss, state.critic.params,
                                                                               batch.obs)
        critic = apply_grads(state.critic, grads, self._tx(self.cfg.critic_lr))
        return critic, c_loss, batch_mean(z.mean((0, 2))), abs_err.mean(0), obs_grad

    def after_update(self, state: DSACState) -> DSACState:
        return state.replace(target_actor=polyak(state.target_actor, state.actor.params, self.cfg.tau))
