"""TD3 (Fujimoto et al., 2018): twin critics, delayed policy, target policy smoothing.

One update:

1. critic:  a' = clip(mu'(s') + clip(eps, -c, c), -1, 1),  eps ~ N(0, target_noise^2)
            y = r + gamma * (1 - terminated) * min_i Q'_i(s', a')
            loss = 1/2 sum_i mean_b w_b (Q_i(s, a) - y)^2
2. every ``policy_delay`` updates:
            actor loss = -mean_b Q_1(s, mu(s));  then Polyak-update mu' and Q'.

Acting adds N(0, exploration_noise^2) to mu(s). With one critic, no smoothing and no
delay this is DDPG, which :mod:`replaylab.agents.ddpg` builds from this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from replaylab.agents.base import Agent, Net, apply_grads, new_net, polyak, batch_mean
from replaylab.agents.networks import Critics, DeterministicActor


@struct.dataclass
class TD3State:
    actor: Net
    critic: Net
    target_actor: dict
    target_critic: dict


@dataclass(frozen=True)
class TD3(Agent):
    delayed_metrics: ClassVar[tuple[str, ...]] = ("actor_loss",)
    metric_names: ClassVar[tuple[str, ...]] = ("critic_loss", "q", "actor_loss")
    num_critics: int = 2
    target_noise: float = 0.2
    target_noise_clip: float = 0.5

    @classmethod
    def from_config(cls, obs_dim, act_dim, cfg, policy_delay, obs_grad=False):
        return cls(obs_dim, act_dim, cfg, policy_delay, obs_grad, num_critics=cfg.num_critics,
                   target_noise=cfg.target_noise, target_noise_clip=cfg.target_noise_clip)

    @property
    def actor_net(self) -> DeterministicActor:
        c = self.cfg
        return DeterministicActor(self.act_dim, c.hidden_sizes, c.activation, c.layer_norm)

    @property
    def critic_net(self) -> Critics:
        c = self.cfg
        return Critics(self.num_critics, c.hidden_sizes, c.activation, c.layer_norm)

    def init(self, key: jax.Array) -> TD3State:
        k_actor, k_critic = jax.random.split(key)
        obs, act = jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.act_dim))
        actor_params = self.actor_net.init(k_actor, obs)
        critic_params = self.critic_net.init(k_critic, obs, act)
        return TD3State(
            actor=new_net(actor_params, optax.adam(self.cfg.actor_lr)),
            critic=new_net(critic_params, optax.adam(self.cfg.critic_lr)),
            target_actor=actor_params,
            target_critic=critic_params,
        )

    def act(self, state: TD3State, obs: jax.Array) -> jax.Array:
        return self.actor_net.apply(state.actor.params, obs)

    def explore(self, state: TD3State, obs: jax.Array, key: jax.Array) -> jax.Array:
        noise = self.cfg.exploration_noise * jax.random.normal(key, obs.shape[:-1] + (self.act_dim,))
        return jnp.clip(self.act(state, obs) + noise, -1.0, 1.0)

    def value(self, state: TD3State, obs: jax.Array, key: jax.Array) -> jax.Array:
        """(B,) Q_1(s, mu(s)), what the actor maximises."""
        return self.critic_net.apply(state.critic.params, obs, self.act(state, obs))[0]

    def update(self, state: TD3State, batch, weights, key, step):
        # 1. critic, with target policy smoothing
        next_action = self.actor_net.apply(state.target_actor, batch.next_obs)
        eps = self.target_noise * jax.random.normal(key, next_action.shape)
        eps = jnp.clip(eps, -self.target_noise_clip, self.target_noise_clip)
        next_action = jnp.clip(next_action + eps, -1.0, 1.0)
        next_q = self.critic_net.apply(state.target_critic, batch.next_obs, next_action).min(0)
        not_done = 1.0 - batch.terminated.astype(jnp.float32)
        y = jax.lax.stop_gradient(batch.reward + self.cfg.gamma * not_done * next_q)

        def critic_loss(params, obs):
            q = self.critic_net.apply(params, obs, batch.action)
            td = q - y
            return 0.5 * batch_mean((td**2).sum(0), weights), (q, td)

        (c_loss, (q, td)), (grads, obs_grad) = self.critic_value_and_grad(critic_loss, state.critic.params,
                                                                          batch.obs)
        critic = apply_grads(state.critic, grads, optax.adam(self.cfg.critic_lr))

        # 2. delayed actor and target updates
        def actor_step(_):
            def actor_loss(params):
                a = self.actor_net.apply(params, batch.obs)
                return -batch_mean(self.critic_net.apply(critic.params, batch.obs, a)[0])

            a_loss, g = jax.value_and_grad(actor_loss)(state.actor.params)
            actor = apply_grads(state.actor, g, optax.adam(self.cfg.actor_lr))
            tau = self.cfg.tau
            return (actor, polyak(state.target_actor, actor.params, tau),
                    polyak(state.target_critic, critic.params, tau), a_loss)

        def skip(_):
            return state.actor, state.target_actor, state.target_critic, jnp.zeros((), jnp.float32)

        updated = jnp.asarray(step) % self.policy_delay == 0
        actor, target_actor, target_critic, a_loss = self.every_policy_delay(step, actor_step, skip)
        new_state = TD3State(actor=actor, critic=critic, target_actor=target_actor, target_critic=target_critic)
        metrics = {"critic_loss": c_loss, "q": batch_mean(q.mean(0)), "actor_loss": a_loss,
                   "actor_updated": updated.astype(jnp.float32)}
        return new_state, metrics, jnp.abs(td).mean(0), obs_grad
