"""MLPs, critic ensembles and policies shared by the agents.

Dense layers are named ``layer_0 .. layer_L`` (the last is the output head) in every
network, so a partial reset can address "the last k layers" of any agent by name.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "elu": nn.elu, "gelu": nn.gelu, "silu": nn.silu}
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@jax.custom_vjp
def add_bias(x: jax.Array, b: jax.Array) -> jax.Array:
    return x + b


def _add_bias_fwd(x, b):
    return x + b, x.shape[:-1]


def _add_bias_bwd(batch_shape, g):
    # The bias gradient as a contraction with ones (a dot) rather than a reduce_sum: XLA
    # computes dots identically whether or not the seed axis is vmapped, reductions not,
    # and this keeps S vmapped seeds bit-identical to S separate runs.
    ones = jnp.ones(batch_shape, g.dtype)
    return g, jnp.tensordot(ones, g, axes=len(batch_shape))


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def orthogonal(scale: float = 1.0) -> nn.initializers.Initializer:
    """Orthogonal initialiser (Saxe et al., 2014) by Gram-Schmidt, in plain XLA ops.

    ``jax.nn.initializers.orthogonal`` calls LAPACK's QR. Under ``vmap`` (seeds, critic
    ensembles) that becomes a batched QR which jaxlib runs as nested tasks on XLA's own
    thread pool; on a 2-core machine every pool thread ends up waiting for tasks queued
    behind it and the process hangs for good (seen here with gdb). Classical Gram-Schmidt,
    applied twice for float32 accuracy, needs only matrix-vector products and gives the
    same distribution: Q of a Gaussian matrix with a positive-diagonal R.
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = shape
        n, m = max(rows, cols), min(rows, cols)
        a = jax.random.normal(key, (n, m), jnp.float32)
        done = jnp.arange(m)

        def next_column(j, q):
            v = q[:, j]
            for _ in range(2):  # "twice is enough" (Giraud et al., 2005)
                v = v - q @ jnp.where(done < j, q.T @ v, 0.0)
            return q.at[:, j].set(v / jnp.linalg.norm(v))

        q = jax.lax.fori_loop(0, m, next_column, a)
        return (scale * (q if rows >= cols else q.T)).astype(dtype)

    return init


class Dense(nn.Module):
    """``x @ kernel + bias``, computed so that vmapping it over seeds changes no bit.

    XLA rewrites dots that have a size-1 dimension into reductions, whose summation order
    depends on the batching; a width-1 layer (a Q head) is therefore computed as width 2
    with a constant zero column and sliced.
    """

    features: int
    kernel_init: nn.initializers.Initializer = orthogonal(1.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.features == 1:
            kernel = jnp.concatenate([kernel, jnp.zeros_like(kernel)], 1)
            bias = jnp.concatenate([bias, jnp.zeros_like(bias)])
            return add_bias(x @ kernel, bias)[..., :1]
        return add_bias(x @ kernel, bias)


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    out_dim: int
    activation: str = "relu"
    layer_norm: bool = False
    out_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for i, width in enumerate(self.hidden_sizes):
            x = Dense(width, kernel_init=orthogonal(math.sqrt(2)), name=f"layer_{i}")(x)
            if self.layer_norm:
                x = nn.LayerNorm(name=f"norm_{i}")(x)
            x = act(x)
        head = Dense(self.out_dim, kernel_init=orthogonal(self.out_scale),
                        name=f"layer_{len(self.hidden_sizes)}")
        return head(x)


class Critics(nn.Module):
    """``num`` independent Q(s, a) MLPs evaluated as one batched network: output (num, B)."""

    num: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        ensemble = nn.vmap(MLP, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=None, out_axes=0, axis_size=self.num)
        q = ensemble(self.hidden_sizes, 1, self.activation, self.layer_norm, name="q")
        return q(jnp.concatenate([obs, action], -1))[..., 0]


class CosineMerge(nn.Module):
    """IQN's fraction embedding merged into the state-action features (Dabney et al., 2018):
    h * sigmoid(W cos(pi i tau)), i = 1..E, then one Dense layer: (B, W) x (B, N) -> (B, N, width)."""

    width: int
    embedding_dim: int = 64
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, h: jax.Array, tau: jax.Array) -> jax.Array:
        phi = jnp.cos(jnp.pi * jnp.arange(1, self.embedding_dim + 1, dtype=h.dtype) * tau[..., None])
        e = Dense(h.shape[-1], kernel_init=orthogonal(math.sqrt(2)), name="embed")(phi)
        if self.layer_norm:
            e = nn.LayerNorm(name="embed_norm")(e)
        x = Dense(self.width, kernel_init=orthogonal(math.sqrt(2)), name="dense")(h[..., None, :] * nn.sigmoid(e))
        if self.layer_norm:
            x = nn.LayerNorm(name="norm")(x)
        return ACTIVATIONS[self.activation](x)


class QuantileMLP(nn.Module):
    """Z(x, tau): quantiles of the return at fractions tau (B, N) -> (B, N). The last hidden
    layer is the ``CosineMerge``, so the layer names (and partial resets) match ``MLP``'s."""

    hidden_sizes: Sequence[int]
    embedding_dim: int = 64
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, tau: jax.Array) -> jax.Array:
        *trunk, last = self.hidden_sizes
        for i, width in enumerate(trunk):
            x = Dense(width, kernel_init=orthogonal(math.sqrt(2)), name=f"layer_{i}")(x)
            if self.layer_norm:
                x = nn.LayerNorm(name=f"norm_{i}")(x)
            x = ACTIVATIONS[self.activation](x)
        x = CosineMerge(last, self.embedding_dim, self.activation, self.layer_norm, name=f"layer_{len(trunk)}")(x, tau)
        return Dense(1, kernel_init=orthogonal(1.0), name=f"layer_{len(self.hidden_sizes)}")(x)[..., 0]


class QuantileCritics(nn.Module):
    """``num`` independent quantile critics as one batched network: output (num, B, N)."""

    num: int
    hidden_sizes: Sequence[int]
    embedding_dim: int = 64
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array, tau: jax.Array) -> jax.Array:
        ensemble = nn.vmap(QuantileMLP, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=(None, None), out_axes=0, axis_size=self.num)
        z = ensemble(self.hidden_sizes, self.embedding_dim, self.activation, self.layer_norm, name="z")
        return z(jnp.concatenate([obs, action], -1), tau)


class GaussianActor(nn.Module):
    """State-dependent mean and log-std of a diagonal Gaussian, squashed by tanh when sampled."""

    act_dim: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = MLP(self.hidden_sizes, 2 * self.act_dim, self.activation, self.layer_norm, 0.01, name="pi")(obs)
        mean, raw = jnp.split(out, 2, axis=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)
        return mean, log_std


class DeterministicActor(nn.Module):
    act_dim: int
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden_sizes, self.act_dim, self.activation, self.layer_norm, 0.01, name="pi")(obs))


def sample_tanh_gaussian(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample a = tanh(u), u ~ N(mean, std), and log pi(a) with the tanh correction."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    gauss = -0.5 * ((u - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    # log(1 - tanh(u)^2), written stably
    squash = 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(gauss - squash, axis=-1)
