"""SMRL: inference-based meta-RL with a recurrent task encoder trained as a neural process
(Durmann, juldur1/Symmetric-Meta-Reinforcement-Learning, 2023).

Acting, at every step t of an episode:

1. window w_t: the last ``context_size`` transitions (s, a, r, s', d) of this episode
   (fewer at its start, none at t = 0; d = terminated)
2. encoder: a ``gru_layers``-deep GRU reads w_t oldest first; from its last hidden state h,
       mean = Dense(h),   var = exp(Dense(h))   (an empty window: N(0, I))
3. the policy acts on (s_t, e_t), e_t = encoding of q(z | w_t) (``encoding_mode``): a
   sample ('sample'), the mean ('mean') or [mean, var] ('mean_var')

One agent update on rows i of ``meta_batch`` tasks (task-major, the window of each row
taken from replay, as at acting time):

4. e_i = enc(w_i), e'_i = enc(w_i shifted by one with row i's own transition appended),
   both with the current encoder and no gradient (the stored encodings are not used)
5. the agent's update (SAC) on (s_i, e_i), (s'_i, e'_i)
6. one ELBO step of the encoder and decoder (Adam, ``lr``), a neural process: for each
   row i, targets x_i = row i and the next ``targets`` - 1 rows of its task's group;
       q_c = q(z | w_i),   q_f = q(z | w_i and x_i, shuffled in time)
       z_1..z_S ~ q_f   (reparameterised, S = ``latent_samples``)
       ELBO_i = 1/S sum_s [ sum_{x in x_i} log p(r | s, a, z_s) + log p(s' | s, a, z_s)
                            + beta (log q_c(z_s) - log q_f(z_s)) ]
   decoder: one ReLU MLP for r, one for s', on [s, a, z], Gaussians with fixed standard
   deviations ``std_reward``, ``std_obs``; loss = -mean_i ELBO_i. The encoder learns
   from this loss only.

Where we differ from the original, and why:

- SAC keeps its entropy bonus and learned temperature (``agent.*``). The indexed copy of
  SMRL's MetaSACTrainer hard-sets alpha = 0 right after computing it, so the original
  trains without an entropy bonus (automatic tuning is off in its configs too). TD3 and
  DDPG work with SMRL as well.
- One ELBO step per agent update, on the agent's batch (its rows are the targets, their
  windows the contexts), instead of 5 VAE steps per 10 policy steps on a separate
  inference buffer; the encoder therefore sees the agent's replay distribution.
- The symmetric encoder (``symmetric``, for toy1d-twosided, where negating s, a and s' maps a
  task to its mirror image) is the plain GRU encoder averaged over the group
  {identity, negation}: mean(x) = (m(x) - m(-x)) / 2, log var(x) = (v(x) + v(-x)) / 2.
  The original builds equivariant layers (BasisLinear / an equivariant GRU from the
  symmetrizer package) instead; the symmetry is the same (the mean flips sign, the
  variance is invariant), exact by construction, and any encoder can be used, at twice
  the encoder cost.
- Reconstruction errors are logged at the mean of q_f, the posterior the ELBO samples
  from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from replaylab.agents.base import Net, apply_grads, batch_mean, new_net
from replaylab.agents.networks import MLP, Dense, add_bias
from replaylab.inference.window import WindowInference, core, push
from replaylab.params import opt
from replaylab.replay.storage import Transition

LOG_VAR_MIN, LOG_VAR_MAX = -10.0, 5.0
LOG_2PI = math.log(2.0 * math.pi)


def _sum_last(x: jax.Array) -> jax.Array:
    """Sum over the last axis as a non-degenerate dot (the same bits with and without a
    vmapped seed axis, see ``agents.base.batch_mean``)."""
    n = x.shape[-1]
    if n == 1:
        return x[..., 0]
    ones = jnp.stack([jnp.ones(n, x.dtype), jnp.zeros(n, x.dtype)], -1)
    return (x @ ones)[..., 0]


def gaussian_log_prob(x: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
    """log N(x; mean, diag(var)), summed over the last axis."""
    return _sum_last(-0.5 * ((x - mean) ** 2 / var + jnp.log(var) + LOG_2PI))


def features(tr: Transition) -> jax.Array:
    """The encoder's input per step: [s, a, r, s', d]."""
    return jnp.concatenate([tr.obs, tr.action, tr.reward[..., None], tr.next_obs,
                            tr.terminated[..., None].astype(tr.obs.dtype)], -1)


def mirror(tr: Transition) -> Transition:
    """toy1d-twosided's symmetry: observations and actions negated, rewards and flags unchanged."""
    return tr.replace(obs=-tr.obs, action=-tr.action, next_obs=-tr.next_obs)


class MaskedGRU(nn.Module):
    """A stack of GRUs over windows (..., T, D); a step with ``mask`` false leaves every
    layer's hidden state unchanged (so it has no effect anywhere in the sequence).
    Returns the last layer's final hidden state (..., H) (zeros if nothing was read).
    Gates as in torch.nn.GRU: r, u = sigmoid(W_i x + b_i + W_h h + b_h), n = tanh(W_in x
    + b_in + r (W_hn h + b_hn)), h' = (1 - u) n + u h; weights uniform in +-1/sqrt(H).
    All windows run as one (N, .) matrix per step, so the weight and bias gradients are
    matrix products, not reductions (summed in the same order with and without a vmapped
    seed axis)."""

    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        H, lead, (T, D) = self.hidden, x.shape[:-2], x.shape[-2:]
        bound = 1.0 / math.sqrt(H)

        def init(key, shape, dtype=jnp.float32):
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        seq = x.reshape((-1, T, D)).swapaxes(0, 1)  # (T, N, D), time first for the scan
        N = seq.shape[1]
        m = mask.reshape((-1, T)).swapaxes(0, 1)[..., None]  # (T, N, 1)
        for layer in range(self.layers):
            w_in = self.param(f"w_in_{layer}", init, (seq.shape[-1], 3 * H))
            b_in = self.param(f"b_in_{layer}", init, (3 * H,))
            w_h = self.param(f"w_h_{layer}", init, (H, 3 * H))
            b_h = self.param(f"b_h_{layer}", init, (3 * H,))
            # the input's part of the gates, for all steps at once
            gx = add_bias(seq.reshape((T * N, -1)) @ w_in, b_in).reshape((T, N, 3 * H))

            def step(h, inp, w_h=w_h, b_h=b_h):
                g, keep = inp
                gh = add_bias(h @ w_h, b_h)
                r = jax.nn.sigmoid(g[:, :H] + gh[:, :H])
                u = jax.nn.sigmoid(g[:, H:2 * H] + gh[:, H:2 * H])
                n = jnp.tanh(g[:, 2 * H:] + r * gh[:, 2 * H:])
                h = jnp.where(keep, (1.0 - u) * n + u * h, h)
                return h, h

            h, seq = jax.lax.scan(step, jnp.zeros((N, H), x.dtype), (gx, m))
        return h.reshape(lead + (H,))


class GRUEncoder(nn.Module):
    """Windows (..., T, D) and masks (..., T) -> (mean, log var) of q(z | window), before
    the prior for an empty window is put in."""

    hidden: int
    layers: int
    latent_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MaskedGRU(self.hidden, self.layers, name="gru")(x, mask)
        return Dense(self.latent_dim, name="mean")(h), Dense(self.latent_dim, name="log_var")(h)


class Decoder(nn.Module):
    """Separate MLPs for the reward and the next state on [s, a, z] (N, .): their means."""

    sizes: Sequence[int]
    obs_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = jnp.concatenate([obs, action, z], -1)
        return MLP(self.sizes, 1, name="reward")(x)[..., 0], MLP(self.sizes, self.obs_dim, name="state")(x)


@dataclass(frozen=True)
class SMRL(WindowInference):
    latent_dim: int = opt(1, "width of z", min=1)
    context_size: int = opt(5, "window: the episode's last T transitions the encoder reads", min=1)
    gru_hidden: int = opt(32, "GRU encoder hidden size", min=1)
    gru_layers: int = opt(4, "GRU encoder layers", min=1)
    encoding_mode: str = opt("sample", "what the policy sees of q(z | window): a sample, its mean, or mean and "
                        "variance", choices=("sample", "mean", "mean_var"))
    decoder_sizes: tuple[int, ...] = opt((8, 8), "hidden layers of the reward and the next-state decoders", min=1)
    std_reward: float = opt(0.1, "standard deviation of the reward likelihood", min=1e-6)
    std_obs: float = opt(0.1, "standard deviation of the next-state likelihood", min=1e-6)
    beta: float = opt(1.0, "weight of log q(z | context) - log q(z | context and targets) in the ELBO",
                      min=0.0)
    latent_samples: int = opt(32, "samples of z per row in the ELBO", min=1)
    targets: int = opt(5, "target transitions per row, from the row's task (SMRL's prediction_target_size)",
                       min=1)
    lr: float = opt(3e-4, "encoder and decoder Adam learning rate", min=0.0)
    symmetric: bool = opt(False, "encoder equivariant to negating s, a, s' (toy1d-twosided): the mean flips sign, "
                          "the variance is unchanged")

    needs_obs_grad: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]] = ("elbo", "reward_error", "state_error")

    def __post_init__(self):
        if self.encoding_mode not in ("sample", "mean", "mean_var"):
            raise ValueError(f"SMRL encoding_mode must be sample, mean or mean_var, not {self.encoding_mode!r}")

    @property
    def encoding_dim(self) -> int:
        return 2 * self.latent_dim if self.encoding_mode == "mean_var" else self.latent_dim

    @property
    def encoder(self) -> GRUEncoder:
        return GRUEncoder(self.gru_hidden, self.gru_layers, self.latent_dim)

    @property
    def decoder(self) -> Decoder:
        return Decoder(tuple(self.decoder_sizes), self.spec.obs_dim)

    @property
    def _tx(self) -> optax.GradientTransformation:
        return optax.adam(self.lr)

    def init(self, key: jax.Array) -> Net:
        s = self.spec
        k_enc, k_dec = jax.random.split(key)
        x = jnp.zeros((1, 2 * s.obs_dim + s.act_dim + 2), jnp.float32)
        encoder = self.encoder.init(k_enc, x, jnp.ones((1,), bool))
        decoder = self.decoder.init(k_dec, jnp.zeros((1, s.obs_dim)), jnp.zeros((1, s.act_dim)),
                                    jnp.zeros((1, self.latent_dim)))
        return new_net({"encoder": encoder, "decoder": decoder}, self._tx)

    def params_of(self, state: Net):
        return state.params["encoder"]

    # -- the posterior (2) and the policy's view of it (3) ------------------------------
    def posterior(self, params, window: Transition, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z | window) for one window (T, ...), or for a batch of them (..., T, ...)."""
        x = features(window)
        if self.symmetric:  # the group average over {identity, negation}
            m, v = self.encoder.apply(params, jnp.stack([x, features(mirror(window))]), jnp.stack([mask, mask]))
            mean, log_var = 0.5 * (m[0] - m[1]), 0.5 * (v[0] + v[1])
        else:
            mean, log_var = self.encoder.apply(params, x, mask)
        seen = jnp.any(mask, -1)[..., None]
        var = jnp.exp(jnp.clip(log_var, LOG_VAR_MIN, LOG_VAR_MAX))
        return jnp.where(seen, mean, 0.0), jnp.where(seen, var, 1.0)

    def encoding(self, mean: jax.Array, var: jax.Array, key: jax.Array) -> jax.Array:
        if self.encoding_mode == "mean":
            return mean
        if self.encoding_mode == "mean_var":
            return jnp.concatenate([mean, var], -1)
        return mean + jnp.sqrt(var) * jax.random.normal(key, mean.shape, mean.dtype)

    # -- learning -------------------------------------------------------------------------
    def condition(self, state: Net, batch, key: jax.Array):
        k_now, k_next, k_elbo = jax.random.split(key, 3)
        params = jax.lax.stop_gradient(self.params_of(state))
        context = core(batch.context)
        next_window, next_mask = jax.vmap(push)(context, batch.context_mask, core(batch.data))
        z = self.encoding(*self.posterior(params, context, batch.context_mask), k_now)  # 4
        z_next = self.encoding(*self.posterior(params, next_window, next_mask), k_next)
        d = batch.data
        data = d.replace(obs=jnp.concatenate([d.obs, z], -1), next_obs=jnp.concatenate([d.next_obs, z_next], -1))
        return data, (batch, k_elbo)

    def target_rows(self, batch) -> jax.Array:
        """(n, targets) rows of each row's targets: itself and the next rows of its group."""
        n = batch.data.reward.shape[0]
        per_task = n // (1 if batch.tasks is None else batch.tasks.shape[0])
        i = jnp.arange(n)
        offset = (i % per_task)[:, None] + jnp.arange(self.targets)[None, :]
        return (i // per_task * per_task)[:, None] + offset % per_task

    def decode(self, params, target: Transition, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Reward (n, ..., K) and next-state (n, ..., K, obs) means of the targets (n, K, .)
        for latents z (n, ..., L), all run as one flat batch."""
        n, extra = z.shape[0], z.shape[1:-1]
        shape = (n,) + extra + (self.targets,)

        def spread(x):  # (n, K, d) -> (n, ..., K, d) -> (N, d)
            x = x.reshape((n,) + (1,) * len(extra) + x.shape[1:])
            return jnp.broadcast_to(x, shape + x.shape[-1:]).reshape((-1, x.shape[-1]))

        zk = jnp.broadcast_to(z[..., None, :], shape + z.shape[-1:]).reshape((-1, z.shape[-1]))
        r, s = self.decoder.apply(params, spread(target.obs), spread(target.action), zk)
        return r.reshape(shape), s.reshape(shape + s.shape[-1:])

    def loss(self, params, batch, key: jax.Array):
        """-mean ELBO over the batch's rows (6), and the logged statistics."""
        k_perm, k_z = jax.random.split(key)
        context, mask = core(batch.context), batch.context_mask  # (n, T, .)
        target = jax.tree.map(lambda x: x[self.target_rows(batch)], core(batch.data))  # (n, K, .)
        n, T, K, S = mask.shape[0], mask.shape[1], self.targets, self.latent_samples
        # context and targets as one window, shuffled in time (row by row)
        perm = jax.vmap(lambda k: jax.random.permutation(k, T + K))(jax.random.split(k_perm, n))

        def shuffle(c, t):
            x = jnp.concatenate([c, t], 1)
            return jnp.take_along_axis(x, perm.reshape(perm.shape + (1,) * (x.ndim - 2)), 1)

        joint = jax.tree.map(shuffle, context, target)
        joint_mask = shuffle(mask, jnp.ones((n, K), bool))
        mean_c, var_c = self.posterior(params["encoder"], context, mask)  # (n, L)
        mean_f, var_f = self.posterior(params["encoder"], joint, joint_mask)
        eps = jax.random.normal(k_z, (n, S, self.latent_dim), mean_f.dtype)
        z = mean_f[:, None] + jnp.sqrt(var_f)[:, None] * eps  # (n, S, L) ~ q_f
        log_ratio = gaussian_log_prob(z, mean_c[:, None], var_c[:, None]) \
            - gaussian_log_prob(z, mean_f[:, None], var_f[:, None])  # (n, S)
        r_mean, s_mean = self.decode(params["decoder"], target, z)  # (n, S, K), (n, S, K, obs)
        log_r = gaussian_log_prob(target.reward[:, None, :, None], r_mean[..., None], self.std_reward ** 2)
        log_s = gaussian_log_prob(target.next_obs[:, None], s_mean, self.std_obs ** 2)
        log_lik = _sum_last(log_r + log_s)  # (n, S): summed over the targets
        elbo = batch_mean(_sum_last(log_lik + self.beta * log_ratio) / S)
        # the decoder's absolute errors at the mean of q_f
        r0, s0 = self.decode(params["decoder"], target, jax.lax.stop_gradient(mean_f))
        reward_error = batch_mean(_sum_last(jnp.abs(target.reward - r0))) / K
        state_error = batch_mean(_sum_last(_sum_last(jnp.abs(target.next_obs - s0)))) / (K * self.spec.obs_dim)
        stats = {"elbo": elbo, "reward_error": reward_error, "state_error": state_error}
        return -elbo, jax.lax.stop_gradient(stats)

    def update(self, state: Net, aux, obs_grad):
        batch, key = aux
        (_, stats), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch, key)
        return apply_grads(state, grads, self._tx), stats
