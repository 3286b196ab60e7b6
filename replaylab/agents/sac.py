"""Soft Actor-Critic (Haarnoja et al., 2018), with a learned temperature.

One update, in the order of the high-replay-ratio reference (D'Oro et al., 2023):

1. critic:  y = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s')),
            a' ~ pi(.|s');  loss = 1/2 sum_i mean_b w_b (Q_i(s, a) - y)^2
2. targets: Q' <- (1 - tau) Q' + tau Q
3. actor (every ``policy_delay`` updates):  loss = mean_b alpha * log pi(a|s) - min_i Q_i(s, a)
4. temperature:  loss = -log(alpha) * mean_b (log pi(a|s) + target_entropy)

The target entropy defaults to -|A| (SB3, CleanRL); the seed repository used -|A|/2,
which ``agent.target_entropy`` can set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from replaylab.agents.base import Agent, Net, apply_grads, new_net, polyak, batch_mean
from replaylab.agents.networks import Critics, GaussianActor, sample_tanh_gaussian


@struct.dataclass
class SACState:
    actor: Net
    critic: Net
    target_critic: dict
    log_alpha: Net


@dataclass(frozen=True)
class SAC(Agent):
    delayed_metrics: ClassVar[tuple[str, ...]] = ("actor_loss", "entropy", "temperature_loss")
    metric_names: ClassVar[tuple[str, ...]] = ("critic_loss", "q", "actor_loss", "entropy", "temperature", "temperature_loss")

    # -- modules and optimisers (static) ------------------------------------------
    @property
    def actor_net(self) -> GaussianActor:
        c = self.cfg
        return GaussianActor(self.act_dim, c.hidden_sizes, c.activation, c.layer_norm)

    @property
    def critic_net(self) -> Critics:
        c = self.cfg
        return Critics(c.num_critics, c.hidden_sizes, c.activation, c.layer_norm)

    @property
    def target_entropy(self) -> float:
        t = self.cfg.target_entropy
        return -float(self.act_dim) if t is None else float(t)

    def _tx(self, lr: float) -> optax.GradientTransformation:
        return optax.adam(lr)

    def critic_example(self) -> tuple[jax.Array, ...]:
        """Example inputs of the critic (one row), for initialisation."""
        return jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.act_dim))

    # -- pure functions -----------------------------------------------------------
    def init(self, key: jax.Array) -> SACState:
        k_actor, k_critic = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim))
        actor_params = self.actor_net.init(k_actor, obs)
        critic_params = self.critic_net.init(k_critic, *self.critic_example())
        log_alpha = jnp.log(jnp.asarray(self.cfg.init_temperature, jnp.float32))
        return SACState(
            actor=new_net(actor_params, self._tx(self.cfg.actor_lr)),
            critic=new_net(critic_params, self._tx(self.cfg.critic_lr)),
            target_critic=critic_params,
            log_alpha=new_net(log_alpha, self._tx(self.cfg.temperature_lr)),
        )

    def explore(self, state: SACState, obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, log_std = self.actor_net.apply(state.actor.params, obs)
        return sample_tanh_gaussian(mean, log_std, key)[0]

    def act(self, state: SACState, obs: jax.Array) -> jax.Array:
        return jnp.tanh(self.actor_net.apply(state.actor.params, obs)[0])

    def value(self, state: SACState, obs: jax.Array, key: jax.Array) -> jax.Array:
        """(B,) the critics' value of the policy at ``obs``: min_i Q_i(s, a), a ~ pi(.|s)."""
        k_action, k_q = jax.random.split(key)
        mean, log_std = self.actor_net.apply(state.actor.params, obs)
        return self.policy_q(state.critic.params, obs, sample_tanh_gaussian(mean, log_std, k_action)[0], k_q)

    def policy_q(self, critic_params, obs: jax.Array, action: jax.Array, key: jax.Array) -> jax.Array:
        """(B,) what the actor maximises: min_i Q_i(s, a)."""
        return self.critic_net.apply(critic_params, obs, action).min(0)

    def critic_step(self, state: SACState, batch, weights, key, alpha):
        """Step 1: (critic, loss, mean Q, per-sample |TD| for PER, d loss / d obs)."""
        mean, log_std = self.actor_net.apply(state.actor.params, batch.next_obs)
        next_action, next_logp = sample_tanh_gaussian(mean, log_std, key)
        next_q = self.critic_net.apply(state.target_critic, batch.next_obs, next_action).min(0)
        not_done = 1.0 - batch.terminated.astype(jnp.float32)
        y = jax.lax.stop_gradient(batch.reward + self.cfg.gamma * not_done * (next_q - alpha * next_logp))

        def critic_loss(params, obs):
            q = self.critic_net.apply(params, obs, batch.action)
            td = q - y
            return 0.5 * batch_mean((td**2).sum(0), weights), (q, td)

        (c_loss, (q, td)), (grads, obs_grad) = self.critic_value_and_grad(critic_loss, state.critic.params,
                                                                          batch.obs)
        critic = apply_grads(state.critic, grads, self._tx(self.cfg.critic_lr))
        return critic, c_loss, batch_mean(q.mean(0)), jnp.abs(td).mean(0), obs_grad

    def update(self, state: SACState, batch, weights, key, step):
        k_target, k_actor = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha.params)

        # 1. critic
        critic, c_loss, q_mean, td_abs, obs_grad = self.critic_step(state, batch, weights, k_target, alpha)
        # 2. targets
        target_critic = polyak(state.target_critic, critic.params, self.cfg.tau)

        # 3-4. actor and temperature, every policy_delay updates
        def actor_step(_):
            def actor_loss(params):
                m, ls = self.actor_net.apply(params, batch.obs)
                a, logp = sample_tanh_gaussian(m, ls, k_actor)
                q_pi = self.policy_q(critic.params, batch.obs, a, jax.random.fold_in(k_actor, 1))
                return batch_mean(alpha * logp - q_pi), logp

            (a_loss, logp), g = jax.value_and_grad(actor_loss, has_aux=True)(state.actor.params)
            actor = apply_grads(state.actor, g, self._tx(self.cfg.actor_lr))
            entropy_gap = jax.lax.stop_gradient(batch_mean(logp) + self.target_entropy)

            def temp_loss(log_alpha):
                return -log_alpha * entropy_gap

            t_loss, tg = jax.value_and_grad(temp_loss)(state.log_alpha.params)
            log_alpha = apply_grads(state.log_alpha, tg, self._tx(self.cfg.temperature_lr))
            return actor, log_alpha, (a_loss, -batch_mean(logp), t_loss)

        def skip(_):
            zero = jnp.zeros((), jnp.float32)
            return state.actor, state.log_alpha, (zero, zero, zero)

        updated = jnp.asarray(step) % self.policy_delay == 0
        actor, log_alpha, (a_loss, entropy, t_loss) = self.every_policy_delay(step, actor_step, skip)
        new_state = self.after_update(state.replace(actor=actor, critic=critic, target_critic=target_critic,
                                                    log_alpha=log_alpha))
        metrics = {
            "critic_loss": c_loss,
            "q": q_mean,
            "actor_loss": a_loss,
            "entropy": entropy,
            "temperature": jnp.exp(log_alpha.params),
            "temperature_loss": t_loss,
            "actor_updated": updated.astype(jnp.float32),
        }
        return new_state, metrics, td_abs, obs_grad

    def after_update(self, state: SACState) -> SACState:
        """Further target updates (DSAC's target policy); none for SAC."""
        return state
