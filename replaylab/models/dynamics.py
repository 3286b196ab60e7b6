"""A probabilistic dynamics ensemble (Chua et al., NeurIPS 2018), as MBPO trains it.

E members, each an MLP with Swish units that maps standardised (s, a) to a diagonal
Gaussian over the targets (MBPO: (r, s' - s)). Members are one pytree with a leading
member axis; every function below is written for one member and ``vmap``-ed, so the
whole ensemble trains and predicts in one compiled call.

Per member, on a batch (x, y):

    mean, log_var = f(x); log_var is soft-bounded by learnt max_lv and min_lv
    loss = mean((mean - y)^2 exp(-log_var) + log_var)          Gaussian NLL (up to consts)
         + 0.01 (sum max_lv - sum min_lv)                       keeps the bounds tight
         + sum_l decay_l * |W_l|^2 / 2                          MBPO's per-layer decays

``fit`` is MBPO's training call: a fresh random split with ``holdout`` of the rows (at
most ``max_holdout``) held out, inputs standardised with the training rows' statistics,
each member trained on its own bootstrap resample of the training rows, and after every
epoch each member whose holdout MSE improved by more than 1 % keeps a snapshot; training
stops after ``patience`` epochs in which no member improved, every member returns to its
best snapshot, and the ``elites`` best on holdout MSE are used for rollouts. The Adam
moments carry over between fits (MBPO keeps its optimiser). One difference: each member
has its own log-variance bounds (MBPO shares one pair across the ensemble), which keeps
every member a self-contained pytree slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

#: MBPO's weight decays for the hidden layers (the last repeats for deeper nets) and the output layer
HIDDEN_DECAYS = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)
OUTPUT_DECAY = 1e-4


@struct.dataclass
class EnsembleState:
    params: Any  # per member, stacked on axis 0: w, b (lists per layer), max_lv, min_lv
    opt: Any
    in_mean: jax.Array  # (D_in,) the input standardisation of the last fit
    in_std: jax.Array
    elites: jax.Array  # (K,) member indices, best holdout MSE first
    holdout_mse: jax.Array  # (E,) at the last fit
    epochs: jax.Array  # () epochs of the last fit


@dataclass(frozen=True)
class Ensemble:
    in_dim: int
    out_dim: int
    members: int = 7
    elites: int = 5
    hidden: int = 200
    layers: int = 4
    lr: float = 1e-3
    batch: int = 256
    holdout: float = 0.2
    max_holdout: int = 5000
    patience: int = 5
    max_epochs: int = 0  # 0: until the holdout stops improving

    @property
    def tx(self):
        return optax.adam(self.lr)

    @property
    def decays(self) -> tuple[float, ...]:
        hidden = tuple(HIDDEN_DECAYS[min(i, len(HIDDEN_DECAYS) - 1)] for i in range(self.layers))
        return hidden + (OUTPUT_DECAY,)

    # -- one member ------------------------------------------------------------------------
    def _init_member(self, key: jax.Array):
        sizes = [self.in_dim] + [self.hidden] * self.layers + [2 * self.out_dim]
        keys = jax.random.split(key, len(sizes) - 1)
        # MBPO's initialiser: truncated normal with std 1 / (2 sqrt(fan_in)), zero biases
        w = [jax.random.truncated_normal(k, -2.0, 2.0, (i, o)) / (2.0 * jnp.sqrt(i))
             for k, i, o in zip(keys, sizes[:-1], sizes[1:])]
        b = [jnp.zeros((o,)) for o in sizes[1:]]
        return dict(w=w, b=b, max_lv=jnp.full((self.out_dim,), 0.5, jnp.float32),
                    min_lv=jnp.full((self.out_dim,), -10.0, jnp.float32))

    def forward(self, p, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and bounded log-variance of the targets at standardised inputs ``x``."""
        h = x
        for w, b in zip(p["w"][:-1], p["b"][:-1]):
            h = jax.nn.swish(h @ w + b)
        out = h @ p["w"][-1] + p["b"][-1]
        mean, lv = out[..., : self.out_dim], out[..., self.out_dim:]
        lv = p["max_lv"] - jax.nn.softplus(p["max_lv"] - lv)
        lv = p["min_lv"] + jax.nn.softplus(lv - p["min_lv"])
        return mean, lv

    def loss(self, p, x: jax.Array, y: jax.Array) -> jax.Array:
        mean, lv = self.forward(p, x)
        nll = jnp.mean((mean - y) ** 2 * jnp.exp(-lv) + lv)
        bounds = 0.01 * (jnp.sum(p["max_lv"]) - jnp.sum(p["min_lv"]))
        decay = sum(d * 0.5 * jnp.sum(w**2) for d, w in zip(self.decays, p["w"]))
        return nll + bounds + decay

    # -- the ensemble ------------------------------------------------------------------------
    def init(self, key: jax.Array) -> EnsembleState:
        params = jax.vmap(self._init_member)(jax.random.split(key, self.members))
        return EnsembleState(params=params, opt=self.tx.init(params), in_mean=jnp.zeros((self.in_dim,)),
                             in_std=jnp.ones((self.in_dim,)), elites=jnp.arange(self.elites, dtype=jnp.int32),
                             holdout_mse=jnp.zeros((self.members,)), epochs=jnp.zeros((), jnp.int32))

    def fit(self, state: EnsembleState, x: jax.Array, y: jax.Array, n: jax.Array, key: jax.Array):
        """Train on the first ``n`` rows of ``x`` (N, D_in) and ``y`` (N, D_out), ``n`` traced."""
        cap = x.shape[0]
        k_split, k_boot, key = jax.random.split(key, 3)
        # a random order of the valid rows: the first H are held out, the rest are trained on
        valid = jnp.arange(cap) < n
        order = jnp.argsort(jnp.where(valid, jax.random.uniform(k_split, (cap,)), 2.0))
        held = min(self.max_holdout, cap)
        H = jnp.minimum((n * self.holdout).astype(jnp.int32), held)
        hold_rows, hold_mask = order[:held], jnp.arange(held) < H
        n_train = jnp.maximum(n - H, 1)
        steps = (n_train + self.batch - 1) // self.batch
        train = (valid & ~jnp.zeros(cap, bool).at[hold_rows].set(hold_mask))[:, None]
        count = n_train.astype(jnp.float32)
        mean = jnp.sum(jnp.where(train, x, 0.0), 0) / count
        std = jnp.sqrt(jnp.sum(jnp.where(train, (x - mean) ** 2, 0.0), 0) / count)
        std = jnp.where(std < 1e-12, 1.0, std)
        xs = (x - mean) / std
        boot = jax.random.randint(k_boot, (self.members, cap), 0, n_train)  # each member's resample (first n_train)

        def holdout_mse(p):
            m, _ = self.forward(p, xs[hold_rows])
            err = jnp.mean((m - y[hold_rows]) ** 2, -1)
            return jnp.sum(jnp.where(hold_mask, err, 0.0)) / jnp.maximum(H, 1)

        def step(i, carry):
            params, opt, k = carry
            pick = jax.random.randint(jax.random.fold_in(k, i), (self.members, self.batch), 0, n_train)
            rows = order[H + jnp.take_along_axis(boot, pick, 1)]
            grads = jax.vmap(jax.grad(self.loss))(params, xs[rows], y[rows])
            updates, opt = self.tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), opt, k

        def epoch(c):
            params, opt, best, best_params, since, done, key = c
            key, k = jax.random.split(key)
            params, opt, _ = jax.lax.fori_loop(0, steps, step, (params, opt, k))
            mse = jax.vmap(holdout_mse)(params)
            better = mse < 0.99 * best  # MBPO: (best - mse) / best > 1 %
            pick = lambda new, old: jnp.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
            best_params = jax.tree.map(pick, params, best_params)
            since = jnp.where(jnp.any(better), 0, since + 1)
            return params, opt, jnp.where(better, mse, best), best_params, since, done + 1, key

        def go_on(c):
            since, done = c[4], c[5]
            return (since < self.patience) & ((self.max_epochs == 0) | (done < self.max_epochs))

        inf = jnp.full((self.members,), jnp.inf)
        start = (state.params, state.opt, inf, state.params, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), key)
        _, opt, best, best_params, _, done, _ = jax.lax.while_loop(go_on, epoch, start)
        elites = jnp.argsort(best)[: self.elites].astype(jnp.int32)
        return EnsembleState(params=best_params, opt=opt, in_mean=mean, in_std=std, elites=elites,
                             holdout_mse=best, epochs=done)

    def sample(self, state: EnsembleState, x: jax.Array, key: jax.Array) -> jax.Array:
        """A Gaussian draw of the targets at raw inputs ``x`` (B, D_in), each row from one
        elite. Rows are dealt to the elites in turn from a random offset (B / K rows each,
        B padded to a multiple of K), so each elite computes only its own rows, and a row
        meets a random elite at every call."""
        B, K = x.shape[0], self.elites
        k_off, k_eps = jax.random.split(key)
        pad = -B % K
        xs = (jnp.pad(x, ((0, pad), (0, 0))) - state.in_mean) / state.in_std
        shift = jax.random.randint(k_off, (), 0, K)
        groups = jnp.roll(xs, shift, 0).reshape(-1, K, self.in_dim).swapaxes(0, 1)  # (K, B/K, D)
        elite = jax.tree.map(lambda p: p[state.elites], state.params)
        mean, lv = jax.vmap(self.forward)(elite, groups)
        draw = mean + jnp.exp(0.5 * lv) * jax.random.normal(k_eps, mean.shape)
        return jnp.roll(draw.swapaxes(0, 1).reshape(-1, self.out_dim), -shift, 0)[:B]
