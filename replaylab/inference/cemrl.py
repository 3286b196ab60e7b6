"""CEMRL: task inference by reconstruction, decoupled from RL, with a class-Gaussian latent
(Lerch/Bing et al.; the base of DMRLAD, zhenshan-bing/cemrl and atefkort/dmrlad).

Encoder q(y, z | x) of a window x = the T transitions (s, a, r, s') before a step,
normalised with the replay's per-dimension statistics:

1. a shared MLP h_t = f(x_t) per transition; class probabilities p_t = softmax(W_y h_t) and
   one Gaussian factor per class N(mu_tk, var_tk), var_tk = softplus(.)
2. q(y | x) = mean_t p_t (``merge_mode`` 'add'); q(z | x, y=k) = prod_t N(mu_tk, var_tk):
       1/var_k = sum_t 1/var_tk,   mu_k = var_k * sum_t mu_tk / var_tk
3. the policy's z = mu_k* of the most probable class k* (deterministic)

``encoder='trajectory'`` is the original's other mode: one MLP reads the whole window
(features of the T rows, masked rows zeroed, and the mask) and gives q(y|x) and the K
Gaussians directly, so it can combine transitions (a 2-D goal is known from distances at
three points; no single transition's Gaussian factor can say that).

``decoder_target='task'`` (ours; 'next', the transition right after the window, is
CEMRL's): the decoder reconstructs a random transition of the window's episode and task up
to ``target_range`` steps away (uniform over that stretch; a few fall inside the window). With the next transition the window's last reward already
predicts the target's, so the ELBO is met by a z that encodes the current distance rather
than the task (toy2d, offline: a quadratic fit of the goal on z explained R^2 = 0.03 with
'next' against 0.39 with 'task'); only the task predicts a far transition. This is SMRL's
neural-process choice (context and target sets of the same task). ``encoder_width`` widens
the encoder: the trajectory encoder reads T transitions through CEMRL's one-transition width.

Decoder p(s'_t, r_t | s_t, a_t, z): two MLPs (the state head predicts the first
``state_clip`` dimensions of s', or of s' - s with ``state_diff``). Per batch of windows:

    loss = mean_b [ sum_k q(k|x_b) (w_s |s_hat - s|^2 + w_r (r_hat - r)^2
                                    + alpha_kl_z KL(q(z|x_b, k) || p(z|k)))
                    + beta_kl_y KL(q(y|x_b) || uniform) ],   z ~ q(z|x_b, k) per class

with p(z|k) = N(k, prior_sigma^2) ('fixedOnY') or a learned linear map of one-hot(k)
('network'). w_s, w_r start at 1/(1+C), C/(1+C) (C = predicted state dims) and every
``eval_interval`` steps become f_i L_i / sum_j f_j L_j of the current training-set
errors L (f_s = 1, f_r = C): the worse-predicted term weighs more.

The epoch pipeline, as the loop's upkeep jobs every ``phase_every`` environment steps:

- ``encoder_phase``: data statistics; up to ``encoder_steps`` Adam steps on windows of
  the training split, validating every ``eval_interval`` steps on the validation split
  (a fixed 20% of transitions by a hash of (episode, step), so a transition never moves
  between splits); stop when the best validation error is ``patience`` steps old and
  restore the best encoder and decoder.
- ``relabel``: store z (and z of the next step) for every stored row; SAC learns on
  (s, z_stored), (s', z'_stored) and never updates the encoder. Between phases the
  encoder is fixed, so a row stored later gets the same z at store time.

Relabelling cost bound: the original re-encoded the whole buffer every epoch, one window
of T transitions per row, i.e. T x (stored rows) encoder passes. Because the window's
posterior is a sum of per-transition factors, we run the encoder once per stored row
and form each window's sums from its T rows' factors: (stored rows) encoder passes per
phase, T times fewer (plus O(T x K x L) additions per row), in chunks of ``relabel_chunk``
rows, so its memory does not grow with the buffer. The trajectory encoder cannot share
factors: one pass per stored row over its gathered window (T rows of features), chunked
the same way.

Where we differ from the original, and why:

- The product of Gaussians uses variances throughout; the original passed softplus
  outputs as variances and then used the fused variance as a standard deviation.
- The windows of the first steps of an episode hold fewer than T transitions: the
  missing ones are masked out (an empty window gives N(0, I) and uniform classes);
  the original encoded zero-padded transitions as if they were data.
- SAC's next-state z is the encoding of the window that ends with the transition (what
  the policy uses at the next step); the original reused z for s'.
- Policy updates interleave with collection at the run's replay ratio instead of
  ``num_policy_steps`` in a block per epoch; SAC is today's (twin Q, learned temperature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from replaylab.agents.base import Net, apply_grads, new_net
from replaylab.agents.networks import MLP
from replaylab.inference.window import WindowBelief, WindowInference
from replaylab.params import opt
from replaylab.replay.storage import Storage, Transition, gather, holds_step
from replaylab.replay.tasks import window_context, window_rows

MIN_VAR = 1e-7


@struct.dataclass
class Stats:
    """Per-dimension mean and std of the features (s, a, r, s') over the stored rows."""

    mean: jax.Array
    std: jax.Array


@struct.dataclass
class CEMRLState:
    encoder: Net  # {"encoder": ..., "prior": ...}
    decoder: Net
    stats: Stats
    loss_weights: jax.Array  # (2,) state, reward


class Encoder(nn.Module):
    shared: int
    classes: int
    latent: int

    @nn.compact
    def __call__(self, x):
        h = MLP((self.shared, self.shared), self.shared)(x)
        logits = nn.Dense(self.classes, name="class_head")(h)
        g = nn.Dense(self.classes * 2 * self.latent, name="gaussian_heads")(h)
        g = g.reshape(g.shape[:-1] + (self.classes, 2, self.latent))
        return logits, g[..., 0, :], jnp.maximum(jax.nn.softplus(g[..., 1, :]), MIN_VAR)


class TrajectoryEncoder(nn.Module):
    """CEMRL's 'trajectory' encoder: one MLP reads the whole flattened window (and its mask)."""

    shared: int
    classes: int
    latent: int

    @nn.compact
    def __call__(self, x, mask):
        x = jnp.concatenate([(x * mask[..., None]).reshape(x.shape[:-2] + (-1,)), mask], -1)
        return Encoder(self.shared, self.classes, self.latent, name="net")(x)


class Decoder(nn.Module):
    hidden: int
    state_dims: int

    @nn.compact
    def __call__(self, s, a, z):
        x = jnp.concatenate([s, a, z], -1)
        return MLP((self.hidden, self.hidden), self.state_dims, name="state")(x), \
            MLP((self.hidden, self.hidden), 1, name="reward")(x)[..., 0]


def same_task_rows(storage: Storage, rows: jax.Array, reach: int, key: jax.Array, tries: int = 4) -> jax.Array:
    """For each row, a row of the same episode and task at most ``reach`` steps before or
    after it (the row itself included), uniform over those rows.

    An episode's stored steps are consecutive rows, so how far it reaches each way is found
    by a binary search (log2(reach) gathers, not reach); offsets are then drawn uniformly in
    that stretch and the first of ``tries`` that has the row's task is taken (all of them
    where the task does not switch inside episodes; the row itself where every try misses)."""

    def extent(sign):  # the largest k <= reach with step +- k of the row's episode stored
        lo, hi = jnp.zeros_like(rows), jnp.full_like(rows, reach + 1)
        for _ in range(reach.bit_length()):
            mid = (lo + hi) // 2
            ok = holds_step(storage, rows, sign * mid)[1] & (hi - lo > 1)
            lo, hi = jnp.where(ok, mid, lo), jnp.where(ok | (hi - lo <= 1), hi, mid)
        return lo

    offset = jax.random.randint(key, (rows.shape[0], tries), -extent(-1)[:, None], extent(1)[:, None] + 1)
    other = (rows[:, None] + offset) % storage.capacity
    if "task" not in storage.data.extra:
        return other[:, 0]
    task = storage.data.extra["task"]
    ok = task[other] == task[rows][:, None]
    return jnp.where(jnp.any(ok, -1), jnp.take_along_axis(other, jnp.argmax(ok, -1)[:, None], -1)[:, 0], rows)


def split_of(episode: jax.Array, step: jax.Array) -> jax.Array:
    """A transition's fixed split, a hash of (episode, step): 0..9, validation below 2."""
    h = episode.astype(jnp.uint32) * jnp.uint32(2654435761) ^ (step.astype(jnp.uint32) * jnp.uint32(40503))
    h = h ^ (h >> 15)
    return (h * jnp.uint32(2246822519) >> 16) % 10


@dataclass(frozen=True)
class CEMRL(WindowInference):
    latent_dim: int = opt(1, "width of z", min=1)
    context_size: int = opt(10, "transitions in the window the encoder reads (CEMRL's time_steps)", min=1)
    num_classes: int = opt(1, "base-task classes K of the latent mixture", min=1)
    encoder: str = opt("transition", "transition: per-transition Gaussian factors fused by a product (CEMRL's "
                       "transitionSharedY); trajectory: one MLP on the flattened window (its 'trajectory' mode)",
                       choices=("transition", "trajectory"))
    prior: str = opt("fixedOnY", "p(z|y): fixedOnY = N(y, prior_sigma^2); network = learned",
                     choices=("fixedOnY", "network"))
    prior_sigma: float = opt(0.5, "standard deviation of the fixedOnY prior", min=1e-6)
    alpha_kl_z: float = opt(1e-3, "weight of KL(q(z|x,y) || p(z|y))", min=0.0)
    beta_kl_y: float = opt(1e-3, "weight of KL(q(y|x) || uniform)", min=0.0)
    net_complexity: float = opt(10.0, "hidden width = this x input width (encoder and decoder)", min=0.1)
    encoder_width: int = opt(0, "hidden width of the encoder (0: net_complexity x one transition's width, the original's "
                             "for both encoders; the trajectory encoder reads context_size times as many inputs)",
                             min=0)
    decoder_target: str = opt("next", "what the decoder reconstructs from a window's z: next = the transition right "
                              "after the window (CEMRL's); task = a random transition of the same episode and task, "
                              "up to target_range steps away (see the module docstring)", choices=("next", "task"))
    target_range: int = opt(100, "with decoder_target=task: the target is at most this many steps before or after "
                            "the row the window precedes", min=1)
    lr: float = opt(3e-4, "Adam learning rate of encoder and decoder", min=0.0)
    encoder_batch: int = opt(256, "windows per encoder step", min=1)
    encoder_steps: int = opt(5000, "most encoder steps per phase", min=1)
    eval_interval: int = opt(50, "encoder steps between validations (and loss-weight updates)", min=1)
    patience: int = opt(500, "stop when the best validation error is this many steps old", min=1)
    every: int = opt(4000, "environment steps between encoder phases (CEMRL's epoch: 20 tasks x 200 steps)",
                     min=1)
    state_clip: int = opt(0, "predict the first this many state dimensions (0: all)", min=0)
    state_diff: bool = opt(False, "predict s' - s instead of s'")
    relabel_chunk: int = opt(4096, "rows encoded at once when relabelling", min=1)

    context: ClassVar[str] = "none"  # SAC reads the stored z; the phase draws its own windows
    phase_metric_names: ClassVar[tuple[str, ...]] = (
        "encoder_train_state_loss", "encoder_train_reward_loss", "encoder_val_state_loss",
        "encoder_val_reward_loss", "encoder_steps", "elbo_start", "elbo", "kl_z", "kl_y")

    # -- sizes ----------------------------------------------------------------------------
    @property
    def phase_every(self) -> int:
        return self.every

    @property
    def feature_dim(self) -> int:
        return 2 * self.spec.obs_dim + self.spec.act_dim + 1

    @property
    def state_dims(self) -> int:
        return self.state_clip and min(self.state_clip, self.spec.obs_dim) or self.spec.obs_dim

    @property
    def encoder_net(self) -> Encoder | TrajectoryEncoder:
        net = Encoder if self.encoder == "transition" else TrajectoryEncoder
        width = self.encoder_width or int(self.feature_dim * self.net_complexity)
        return net(width, self.num_classes, self.latent_dim)

    @property
    def decoder_net(self) -> Decoder:
        s = self.spec
        return Decoder(int((s.obs_dim + s.act_dim + self.latent_dim) * self.net_complexity), self.state_dims)

    @property
    def _tx(self) -> optax.GradientTransformation:
        return optax.adam(self.lr)

    def init(self, key: jax.Array) -> CEMRLState:
        s, K, L = self.spec, self.num_classes, self.latent_dim
        k_enc, k_prior, k_dec = jax.random.split(key, 3)
        example = ((jnp.zeros((1, self.feature_dim)),) if self.encoder == "transition" else
                   (jnp.zeros((1, self.context_size, self.feature_dim)), jnp.zeros((1, self.context_size))))
        enc = {"encoder": self.encoder_net.init(k_enc, *example),
               "prior": nn.Dense(2 * L).init(k_prior, jnp.zeros((1, K)))}
        dec = self.decoder_net.init(k_dec, jnp.zeros((1, s.obs_dim)), jnp.zeros((1, s.act_dim)), jnp.zeros((1, L)))
        C = float(self.state_dims)
        return CEMRLState(encoder=new_net(enc, self._tx), decoder=new_net(dec, self._tx),
                          stats=Stats(mean=jnp.zeros(self.feature_dim), std=jnp.ones(self.feature_dim)),
                          loss_weights=jnp.array([1.0 / (1.0 + C), C / (1.0 + C)], jnp.float32))

    # -- the encoder ----------------------------------------------------------------------
    @staticmethod
    def raw_features(tr: Transition) -> jax.Array:
        return jnp.concatenate([tr.obs, tr.action, tr.reward[..., None], tr.next_obs], -1)

    def features(self, stats: Stats, tr: Transition) -> jax.Array:
        return (self.raw_features(tr) - stats.mean) / (stats.std + 1e-9)

    def factors(self, params, stats: Stats, tr: Transition):
        """Per transition (..., F): class probabilities (..., K), precisions (..., K, L) and
        precision-weighted means (..., K, L): a window's posterior is their masked sum."""
        logits, mu, var = self.encoder_net.apply(params["encoder"], self.features(stats, tr))
        return jax.nn.softmax(logits), 1.0 / var, mu / var

    def fuse(self, probs, precision, weighted, count):
        """q(y|x) and each class' N(mean, var) from summed factors of ``count`` transitions;
        an empty window: uniform classes, N(0, I)."""
        some = count > 0
        q = jnp.where(some[..., None], probs / jnp.maximum(count, 1)[..., None], 1.0 / self.num_classes)
        var = jnp.where(some[..., None, None], 1.0 / jnp.maximum(precision, 1e-12), 1.0)
        mean = jnp.where(some[..., None, None], var * weighted, 0.0)
        return q, mean, var

    def window_posterior(self, params, stats: Stats, window: Transition, mask: jax.Array):
        """(q(y|x) (..., K), means (..., K, L), variances (..., K, L)) of windows (..., T, ...)."""
        m = mask.astype(jnp.float32)
        if self.encoder == "trajectory":
            logits, mu, var = self.encoder_net.apply(params["encoder"], self.features(stats, window), m)
            some = jnp.any(mask, -1)[..., None]
            return (jnp.where(some, jax.nn.softmax(logits), 1.0 / self.num_classes),
                    jnp.where(some[..., None], mu, 0.0), jnp.where(some[..., None], var, 1.0))
        probs, precision, weighted = self.factors(params, stats, window)
        return self.fuse(jnp.einsum("...t,...tk->...k", m, probs), jnp.einsum("...t,...tkl->...kl", m, precision),
                         jnp.einsum("...t,...tkl->...kl", m, weighted), jnp.sum(mask, -1))

    @staticmethod
    def pick(q, mean, var):
        """The most probable class and its Gaussian."""
        k = jnp.argmax(q, -1)
        take = lambda x: jnp.take_along_axis(x, k[..., None, None], -2)[..., 0, :]  # noqa: E731
        return k, take(mean), take(var)

    # -- acting (the window belief) -------------------------------------------------------
    def params_of(self, state: CEMRLState):
        return state.encoder.params, state.stats

    def posterior(self, p, window: Transition, mask: jax.Array):
        return self.pick(*self.window_posterior(p[0], p[1], window, mask))[1:]

    def _encode(self, state, window, mask, key) -> WindowBelief:
        k, mean, var = self.pick(*self.window_posterior(state.encoder.params, state.stats, window, mask))
        return WindowBelief(window=window, mask=mask, mean=mean, var=var, z=mean, key=key, cls=k.astype(jnp.int32))

    def belief_stats(self, b: WindowBelief) -> dict:
        return {"mean": b.mean, "var": b.var, "class": b.cls}

    # -- SAC on (s, z_stored) ----------------------------------------------------------------
    def columns(self) -> dict:
        return {"z": ((self.latent_dim,), jnp.float32), "next_z": ((self.latent_dim,), jnp.float32)}

    def annotate(self, state, before: WindowBelief, after: WindowBelief, tr: Transition) -> Transition:
        """Store the z of the window before the step and after it (both the current
        encoder's: ``relabel`` re-encodes the belief when the encoder changes)."""
        return tr.replace(extra={**tr.extra, "z": before.z, "next_z": after.z})

    def condition(self, state, batch, key):
        d = batch.data
        return d.replace(obs=jnp.concatenate([d.obs, d.extra["z"]], -1),
                         next_obs=jnp.concatenate([d.next_obs, d.extra["next_z"]], -1)), ()

    # -- the encoder phase --------------------------------------------------------------------
    def prior_params(self, enc_params):
        """(means, variances) of p(z|y=k), each (K, L)."""
        K, L = self.num_classes, self.latent_dim
        if self.prior == "fixedOnY":
            mean = jnp.broadcast_to(jnp.arange(K, dtype=jnp.float32)[:, None], (K, L))
            return mean, jnp.full((K, L), self.prior_sigma**2)
        out = nn.Dense(2 * L).apply(enc_params["prior"], jnp.eye(K))
        return out[:, :L], jnp.maximum(jax.nn.softplus(out[:, L:]) ** 2, MIN_VAR)

    def targets(self, stats: Stats, d: Transition):
        """Normalised decoder inputs (s, a) and targets (s' or s' - s, first state dims; r)."""
        x = self.features(stats, d)
        O, A = self.spec.obs_dim, self.spec.act_dim
        s, a, r, s_next = x[..., :O], x[..., O:O + A], x[..., O + A], x[..., O + A + 1:]
        target = (s_next - s if self.state_diff else s_next)[..., : self.state_dims]
        return s, a, target, r

    def loss(self, enc_params, dec_params, stats, weights, d: Transition, window, mask, key, row_weight):
        """-ELBO (the module docstring's loss) over rows weighted by ``row_weight``."""
        q, mean, var = self.window_posterior(enc_params, stats, window, mask)  # (B,K), (B,K,L)
        z = mean + jnp.sqrt(var) * jax.random.normal(key, mean.shape)
        s, a, target, r = self.targets(stats, d)
        K = self.num_classes
        rep = lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], K) + x.shape[1:])  # noqa: E731
        s_hat, r_hat = self.decoder_net.apply(dec_params, rep(s), rep(a), z)
        state_err = jnp.sum((s_hat - rep(target)) ** 2, -1)  # (B, K)
        reward_err = (r_hat - rep(r)) ** 2
        p_mean, p_var = self.prior_params(enc_params)
        kl_z = 0.5 * jnp.sum(jnp.log(p_var / var) + (var + (mean - p_mean) ** 2) / p_var - 1.0, -1)  # (B, K)
        kl_y = jnp.sum(q * jnp.log(jnp.maximum(q * K, 1e-12)), -1)
        per_class = weights[0] * state_err + weights[1] * reward_err + self.alpha_kl_z * kl_z
        w = row_weight / jnp.maximum(jnp.sum(row_weight), 1.0)
        loss = w @ (jnp.sum(q * per_class, -1) + self.beta_kl_y * kl_y)
        return loss, {"kl_z": w @ jnp.sum(q * kl_z, -1), "kl_y": w @ kl_y}

    def errors(self, state: CEMRLState, enc_params, dec_params, d, window, mask, weight):
        """Weighted mean squared state and reward errors at the policy's z."""
        _, z, _ = self.pick(*self.window_posterior(enc_params, state.stats, window, mask))
        s, a, target, r = self.targets(state.stats, d)
        s_hat, r_hat = self.decoder_net.apply(dec_params, s, a, z)
        w = weight / jnp.maximum(jnp.sum(weight), 1.0)
        return jnp.sum(w * jnp.mean((s_hat - target) ** 2, -1)), jnp.sum(w * (r_hat - r) ** 2)

    def draw(self, storage: Storage, key, n: int, validation: bool):
        """``n`` windows of stored rows and the decoder's target transitions, weighted 1 where
        the target is in the split."""
        rows = jax.random.randint(key, (n,), 0, jnp.maximum(storage.size, 1))
        window, mask = window_context(storage, rows, self.context_size)
        if self.decoder_target == "task":
            rows = same_task_rows(storage, rows, self.target_range, jax.random.fold_in(key, 1))
        d = gather(storage, rows)
        in_val = split_of(d.episode, d.step) < 2
        weight = (in_val if validation else ~in_val).astype(jnp.float32)
        return d, window, mask, weight

    def encoder_phase(self, state: CEMRLState, storage: Storage, key: jax.Array):
        state = state.replace(stats=feature_stats(storage))
        B, C = self.encoder_batch, float(self.state_dims)
        k_val, k_loop = jax.random.split(key)
        val = self.draw(storage, k_val, 4 * B, True)  # one fixed validation set per phase

        def block(c):
            enc, dec, weights, best, best_val, since, steps, key, first = c
            key, k_block, k_train = jax.random.split(key, 3)
            s = state.replace(loss_weights=weights)
            (enc, dec), (elbo, terms) = jax.lax.scan(
                lambda carry, k: self._step(carry, k, s, storage), (enc, dec),
                jax.random.split(k_block, self.eval_interval))
            steps = steps + self.eval_interval
            vs, vr = self.errors(s, enc.params, dec.params, *val)
            ts, tr = self.errors(s, enc.params, dec.params, *self.draw(storage, k_train, 4 * B, False))
            f = jnp.array([1.0, C]) * jnp.stack([ts, tr])
            weights = f / jnp.maximum(jnp.sum(f), 1e-12)
            improved = vs + vr < best_val
            record = jnp.stack([ts, tr, vs, vr, jnp.mean(elbo), jnp.mean(terms["kl_z"]), jnp.mean(terms["kl_y"])])
            best = jax.tree.map(lambda n, o: jnp.where(improved, n, o), (enc.params, dec.params, record), best)
            first = jnp.where(steps == self.eval_interval, jnp.mean(elbo), first)
            return (enc, dec, weights, best, jnp.where(improved, vs + vr, best_val),
                    jnp.where(improved, 0, since + self.eval_interval), steps, key, first)

        def going(c):
            since, steps = c[5], c[6]
            return (steps < self.encoder_steps) & (since < self.patience)

        start = (state.encoder, state.decoder, state.loss_weights,
                 (state.encoder.params, state.decoder.params, jnp.zeros(7)), jnp.asarray(jnp.inf),
                 jnp.asarray(0), jnp.asarray(0), k_loop, jnp.asarray(0.0))
        enc, dec, weights, (best_enc, best_dec, rec), _, _, steps, _, first = jax.lax.while_loop(going, block, start)
        state = state.replace(encoder=enc.replace(params=best_enc), decoder=dec.replace(params=best_dec),
                              loss_weights=weights)
        metrics = dict(zip(("encoder_train_state_loss", "encoder_train_reward_loss", "encoder_val_state_loss",
                            "encoder_val_reward_loss", "elbo", "kl_z", "kl_y"),
                           (rec[0], rec[1], rec[2], rec[3], rec[4], rec[5], rec[6])))
        return state, {**metrics, "encoder_steps": steps.astype(jnp.float32), "elbo_start": first}

    def _step(self, carry, key, state: CEMRLState, storage: Storage):
        """One Adam step of encoder and decoder on a batch of training-split windows."""
        enc, dec = carry
        k_rows, k_z = jax.random.split(key)
        d, window, mask, weight = self.draw(storage, k_rows, self.encoder_batch, False)

        def objective(ep, dp):
            loss, terms = self.loss(ep, dp, state.stats, state.loss_weights, d, window, mask, k_z, weight)
            return loss, terms

        (loss, terms), (g_enc, g_dec) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            enc.params, dec.params)
        return (apply_grads(enc, g_enc, self._tx), apply_grads(dec, g_dec, self._tx)), (-loss, terms)

    def encoding_after(self, state, storage: Storage, rows: jax.Array, key: jax.Array) -> jax.Array:
        """The stored ``next_z``: the encoding of the window ending with each row under the
        current encoder (written by ``annotate`` and rewritten by ``relabel`` after every
        encoder phase), so nothing is encoded again."""
        return storage.data.extra["next_z"][rows]

    # -- relabelling ------------------------------------------------------------------------------
    def relabel(self, state: CEMRLState, storage: Storage, belief: WindowBelief):
        """z and next z of every stored row, chunk by chunk (see the module docstring), and
        the acting belief's z, all with the new encoder."""
        cap, T = storage.capacity, self.context_size
        n = min(self.relabel_chunk, cap)
        d = storage.data
        params = state.encoder.params

        def chunk(c, extra):
            start = jnp.minimum(c * n, cap - n)
            rows = start + jnp.arange(n)
            first = start - T
            span = (first + jnp.arange(n + T)) % cap  # rows whose factors the chunk's windows use
            if self.encoder == "transition":
                probs, precision, weighted = self.factors(params, state.stats, jax.tree.map(lambda x: x[span], d))

            def windowed(shift):  # 0: the window before the row; 1: the one ending with it
                if self.encoder == "trajectory":  # one pass per row over its gathered window
                    window, ok = window_context(storage, rows, T, shift)
                    return self.pick(*self.window_posterior(params, state.stats, window, ok))[1]
                prev, ok = window_rows(storage, rows, T, shift)
                pos = (prev - first) % cap  # where those rows' factors are in span
                m = ok.astype(jnp.float32)
                q, mean, var = self.fuse(jnp.einsum("nt,ntk->nk", m, probs[pos]),
                                         jnp.einsum("nt,ntkl->nkl", m, precision[pos]),
                                         jnp.einsum("nt,ntkl->nkl", m, weighted[pos]), jnp.sum(ok, -1))
                return self.pick(q, mean, var)[1]

            stored = rows < storage.size
            put = lambda col, new: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
                col, jnp.where(stored[:, None], new, jax.lax.dynamic_slice_in_dim(col, start, n)), start, 0)
            return {**extra, "z": put(extra["z"], windowed(0)), "next_z": put(extra["next_z"], windowed(1))}

        chunks = (storage.size + n - 1) // n
        extra = jax.lax.fori_loop(0, chunks, chunk, d.extra)
        return storage.replace(data=d.replace(extra=extra)), self._encode(state, belief.window, belief.mask, belief.key)


def feature_stats(storage: Storage) -> Stats:
    """Mean and std per feature dimension over the stored rows."""
    x = CEMRL.raw_features(storage.data)
    w = (jnp.arange(storage.capacity) < storage.size).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w), 1.0)
    mean = w @ x / n
    var = w @ (x - mean) ** 2 / n
    return Stats(mean=mean, std=jnp.sqrt(var))
