"""PEARL: probabilistic embeddings for actor-critic RL (Rakelly et al., ICML 2019).

One meta update, for each of ``meta_batch`` train tasks t (drawn with replacement):

1. context c_t: ``context_size`` transitions (s, a, r[, s']) of task t's most recent visit
2. encoder: each transition n gives a Gaussian factor N(mu_n, var_n), var_n = softplus(.)
3. posterior: product of the factors,
       var_t = 1 / sum_n 1/var_n,   mu_t = var_t * sum_n mu_n/var_n
4. z_t = mu_t + sqrt(var_t) * eps   (reparameterised)
5. the agent's update on (s, z_t), (s', z_t) for ``batch_size`` transitions of task t;
   the actor and the targets see z as data (no gradient), the critic loss' gradient
   w.r.t. z flows back into the encoder
6. encoder loss = critic loss + kl_lambda * sum_t KL(N(mu_t, var_t) || N(0, I))

Acting: the belief is the running sums sum 1/var_n and sum mu_n/var_n over the task's
transitions so far; a new task clears them. At an episode start z is drawn from the
prior N(0, I) during the first ``prior_episodes`` episodes of a task (and while the sums
are empty), from the posterior afterwards: the posterior changes at episode boundaries
only, as in the original.

Where we differ from the original (katerakelly/oyster), and why:

- The agent is today's SAC (twin Q, target critics, learned temperature) rather than
  PEARL's SAC-v1 with a V network and a fixed ``reward_scale`` standing in for the
  temperature; ``agent.reward_scale`` is still available. TD3 and DDPG work too.
- The critic loss the encoder sees is PEARL's sum over the two critics of the mean
  squared TD error (twice replaylab's 1/2-weighted loss), so ``kl_lambda`` weighs the
  same against it as in the original.
- The context is drawn from the replay's record of each task's latest visit (the part
  collected with z from the prior or posterior, not the RL-only extra episodes), which
  is what PEARL's per-task encoder buffer holds, without a second buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import struct

from replaylab.agents.base import Net, apply_grads, new_net
from replaylab.agents.networks import MLP
from replaylab.inference.base import Inference, append_z
from replaylab.params import opt
from replaylab.replay.storage import Transition

MIN_VAR = 1e-7


@struct.dataclass
class Belief:
    precision: jax.Array  # (L,) sum of 1/var_n over the task's transitions so far
    weighted_mean: jax.Array  # (L,) sum of mu_n/var_n
    count: jax.Array  # () transitions observed
    z: jax.Array  # (L,) the z the policy acts with in this episode


def product_of_gaussians(mu: jax.Array, var: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior mean and variance over the context axis (-2) of Gaussian factors
    (..., C, L), masked rows left out. Sums are contractions (dots), which XLA computes
    the same way with and without a vmapped seed axis."""
    precision = jnp.einsum("...c,...cl->...l", mask.astype(mu.dtype), 1.0 / var)
    weighted = jnp.einsum("...c,...cl->...l", mask.astype(mu.dtype), mu / var)
    post_var = 1.0 / jnp.maximum(precision, 1e-12)
    return post_var * weighted, post_var


def kl_to_standard_normal(mu: jax.Array, var: jax.Array) -> jax.Array:
    """KL(N(mu, var) || N(0, I)) summed over the last axis."""
    per_dim = 0.5 * (var + mu**2 - 1.0 - jnp.log(var))
    return per_dim @ jnp.ones(per_dim.shape[-1], per_dim.dtype)


@dataclass(frozen=True)
class PEARL(Inference):
    latent_dim: int = opt(5, "width of z", min=1)
    encoder_sizes: tuple[int, ...] = opt((200, 200, 200), "hidden layers of the per-transition encoder", min=1)
    kl_lambda: float = opt(0.1, "weight of the KL of each task's posterior to N(0, I)", min=0.0)
    encoder_lr: float = opt(3e-4, "encoder Adam learning rate", min=0.0)
    context_size: int = opt(64, "context transitions per task in an update (PEARL's embedding_batch_size)",
                             min=1)
    use_next_obs: bool = opt(False, "include s' in the context (for tasks that differ in dynamics)")

    context: ClassVar[str] = "recent"
    needs_obs_grad: ClassVar[bool] = True
    encodes_trajectories: ClassVar[bool] = False  # z changes only between episodes
    metric_names: ClassVar[tuple[str, ...]] = ("kl", "z_mean", "z_var")

    @property
    def encoder(self) -> MLP:
        return MLP(self.encoder_sizes, 2 * self.latent_dim)

    @property
    def _tx(self) -> optax.GradientTransformation:
        return optax.adam(self.encoder_lr)

    def features(self, tr: Transition) -> jax.Array:
        """One context row per transition: (s, a, r[, s']); the terminal flag is never part of it."""
        cols = [tr.obs, tr.action, tr.reward[..., None]] + ([tr.next_obs] if self.use_next_obs else [])
        return jnp.concatenate(cols, axis=-1)

    def factors(self, params, tr: Transition) -> tuple[jax.Array, jax.Array]:
        out = self.encoder.apply(params, self.features(tr))
        mu, raw = jnp.split(out, 2, axis=-1)
        return mu, jnp.maximum(jax.nn.softplus(raw), MIN_VAR)

    def init(self, key: jax.Array) -> Net:
        s = self.spec
        dim = 2 * s.obs_dim + s.act_dim + 1 if self.use_next_obs else s.obs_dim + s.act_dim + 1
        return new_net(self.encoder.init(key, jnp.zeros((1, dim))), self._tx)

    # -- learning ----------------------------------------------------------------------
    def condition(self, state: Net, batch, key: jax.Array):
        per_task = batch.data.reward.shape[0] // batch.tasks.shape[0]

        def encode(params):  # 2-4
            mu, var = product_of_gaussians(*self.factors(params, batch.context), batch.context_mask)
            z = mu + jnp.sqrt(var) * jax.random.normal(key, mu.shape)
            return (z, jnp.sum(kl_to_standard_normal(mu, var))), (mu, var)

        (z, kl_sum), backprop, (mu, var) = jax.vjp(encode, state.params, has_aux=True)
        z_rows = jax.lax.stop_gradient(jnp.repeat(z, per_task, axis=0))  # 5: z is data for the agent
        d = batch.data
        data = d.replace(obs=jnp.concatenate([d.obs, z_rows], -1), next_obs=jnp.concatenate([d.next_obs, z_rows], -1))
        stats = {"kl": kl_sum / mu.shape[0], "z_mean": jnp.mean(mu), "z_var": jnp.mean(var)}
        return data, (backprop, per_task, stats)

    def update(self, state: Net, aux, obs_grad: jax.Array):
        backprop, per_task, stats = aux
        dz_rows = obs_grad[:, self.spec.obs_dim:]  # critic-loss gradient w.r.t. each row's z
        tasks = dz_rows.shape[0] // per_task
        dz = jnp.einsum("b,tbl->tl", jnp.ones(per_task, dz_rows.dtype), dz_rows.reshape(tasks, per_task, -1))
        (grads,) = backprop((2.0 * dz, jnp.asarray(self.kl_lambda, dz.dtype)))  # 6
        return apply_grads(state, grads, self._tx), stats

    # -- acting -------------------------------------------------------------------------
    def belief_init(self) -> Belief:
        zeros = jnp.zeros((self.latent_dim,), jnp.float32)
        return Belief(precision=zeros, weighted_mean=zeros, count=jnp.zeros((), jnp.int32), z=zeros)

    def observe(self, state: Net, b: Belief, tr: Transition) -> Belief:
        mu, var = self.factors(state.params, jax.tree.map(lambda x: x[None], tr))
        return b.replace(precision=b.precision + 1.0 / var[0], weighted_mean=b.weighted_mean + mu[0] / var[0],
                         count=b.count + 1)

    def begin_episode(self, state: Net, b: Belief, new_task, prior, key) -> Belief:
        b = jax.tree.map(lambda fresh, old: jnp.where(new_task, fresh, old), self.belief_init(), b)
        var = 1.0 / jnp.maximum(b.precision, 1e-12)
        use_prior = prior | (b.count == 0)
        mu, var = jnp.where(use_prior, 0.0, var * b.weighted_mean), jnp.where(use_prior, 1.0, var)
        return b.replace(z=mu + jnp.sqrt(var) * jax.random.normal(key, mu.shape))

    def policy_obs(self, b: Belief, obs: jax.Array) -> jax.Array:
        return append_z(obs, b.z)

    def belief_stats(self, b: Belief) -> dict:
        var = 1.0 / jnp.maximum(b.precision, 1e-12)
        return {"mean": var * b.weighted_mean, "var": jnp.where(b.count > 0, var, 1.0)}
