"""What every agent provides, and the small pieces they share.

An agent is a frozen dataclass of static settings with pure functions over a pytree
state, so the training loop can ``jit``, ``scan`` (replay ratio) and ``vmap`` (seeds) it:

- ``init(key) -> state``
- ``explore(state, obs, key) -> action`` and ``act(state, obs) -> action`` (deterministic)
- ``value(state, obs, key) -> (B,)``: the critic's value of the policy's action
- ``update(state, batch, weights, key, step) -> (state, metrics, td_errors, obs_grad)``:
  one gradient step; ``weights`` are per-sample loss weights (PER importance weights,
  BIER likelihoods; ones by default) and ``td_errors`` feed prioritised samplers.
  ``obs_grad`` is the gradient of the critic loss with respect to ``batch.obs`` when
  ``obs_grad=True`` (None otherwise): a task encoder whose z is appended to the
  observations (PEARL) learns through the critic loss by back-propagating it, so every
  agent is conditioned on (s, z) by the same mechanism, with no copy per agent.

``step`` is the global update counter. It is the same for every seed, so it is passed
unbatched and ``lax.cond`` on it (policy delay) stays a real branch under ``vmap``.
Metrics named in ``delayed_metrics`` are only meaningful on steps where
``metrics['actor_updated']`` is 1; the loop averages them over those steps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from replaylab.agents.config import AgentConfig


@struct.dataclass
class Net:
    """Parameters with their optimiser state."""

    params: dict
    opt_state: optax.OptState


def new_net(params, tx: optax.GradientTransformation) -> Net:
    return Net(params=params, opt_state=tx.init(params))


def apply_grads(net: Net, grads, tx: optax.GradientTransformation) -> Net:
    updates, opt_state = tx.update(grads, net.opt_state, net.params)
    return Net(params=optax.apply_updates(net.params, updates), opt_state=opt_state)


def polyak(target, online, tau: float):
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def batch_mean(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """(Weighted) mean over the batch axis, written as a dot product.

    XLA sums a reduction in a different order once a seed axis is vmapped, but computes a
    (non-degenerate) dot the same way; a seed's result then does not depend on how many
    seeds run together. The zero column keeps the dot from being degenerate.
    """
    w = jnp.ones(x.shape[0], x.dtype) if weights is None else weights
    return jnp.dot(w, jnp.stack([x, jnp.zeros_like(x)], -1))[0] / x.shape[0]


@dataclass(frozen=True)
class Agent:
    obs_dim: int
    act_dim: int
    cfg: AgentConfig
    policy_delay: int = 1
    obs_grad: bool = False

    delayed_metrics: ClassVar[tuple[str, ...]] = ()
    metric_names: ClassVar[tuple[str, ...]] = ()

    def init(self, key: jax.Array):
        raise NotImplementedError

    def explore(self, state, obs: jax.Array, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def act(self, state, obs: jax.Array) -> jax.Array:
        raise NotImplementedError

    def update(self, state, batch, weights, key, step):
        raise NotImplementedError

    def value(self, state, obs: jax.Array, key: jax.Array) -> jax.Array:
        """(B,) the critic's value of the policy at ``obs`` (HFR's utility)."""
        raise NotImplementedError

    def critic_value_and_grad(self, loss, params, obs):
        """``loss(params, obs) -> (value, aux)``: its value and gradient w.r.t. the params,
        and w.r.t. ``obs`` too when ``obs_grad`` is set."""
        if self.obs_grad:
            return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, obs)
        value, grads = jax.value_and_grad(loss, has_aux=True)(params, obs)
        return value, (grads, None)

    def every_policy_delay(self, step, update, skip):
        """``update(None)`` on every ``policy_delay``-th step, else ``skip(None)``; with a
        delay of 1 the update is inlined (no conditional, so XLA can fuse across it)."""
        if self.policy_delay == 1:
            return update(None)
        return jax.lax.cond(jnp.asarray(step) % self.policy_delay == 0, update, skip, None)

    @property
    def num_layers(self) -> int:
        """Dense layers per network (hidden + output), the unit of a partial reset."""
        return len(self.cfg.hidden_sizes) + 1
