"""Online task inference from a sliding window of the episode's last T transitions.

SMRL and CEMRL adapt inside an episode: at every step the policy acts on (s, z) with z
encoded from the last ``context_size`` transitions of this episode (none at its start),
so a task that switches mid-episode is picked up within T steps; there are no
exploration episodes. Learning sees exactly the same windows: ``replay.tasks.
window_context`` gathers, for each replayed row, the T rows before it in its episode.

The belief is the window itself (a masked ring of raw transitions, oldest first) and the
encoding of it; ``observe`` pushes the new transition and re-encodes with the current
parameters, ``begin_episode`` empties it. A method supplies ``posterior(params, window,
mask) -> (mean, var)`` for one window (with ``mask`` all false it must return N(0, I))
and, optionally, how the policy reads the posterior (``encoding``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.inference.base import Inference, append_z
from replaylab.replay.storage import Transition
from replaylab.replay.tasks import window_context


@struct.dataclass
class WindowBelief:
    window: Transition  # (T, ...) the episode's last T transitions, oldest first
    mask: jax.Array  # (T,) which entries are real transitions
    mean: jax.Array  # (L,) posterior of z given the window
    var: jax.Array  # (L,)
    z: jax.Array  # (encoding_dim,) what the policy appends to s
    key: jax.Array  # for methods whose encoding is a sample
    cls: jax.Array = 0  # () the window's most probable class, for methods with classes (CEMRL)


def empty_window(size: int, obs_dim: int, act_dim: int) -> tuple[Transition, jax.Array]:
    f32, i32 = jnp.float32, jnp.int32
    window = Transition(obs=jnp.zeros((size, obs_dim), f32), action=jnp.zeros((size, act_dim), f32),
                        reward=jnp.zeros((size,), f32), next_obs=jnp.zeros((size, obs_dim), f32),
                        terminated=jnp.zeros((size,), bool), episode=jnp.zeros((size,), i32),
                        step=jnp.zeros((size,), i32))
    return window, jnp.zeros((size,), bool)


def core(tr: Transition) -> Transition:
    """The transition without its extra columns (a window holds only these)."""
    return tr.replace(extra={})


def push(window: Transition, mask: jax.Array, tr: Transition) -> tuple[Transition, jax.Array]:
    """Drop the oldest entry, append ``tr`` (its extra columns are not part of a window)."""
    window = jax.tree.map(lambda w, x: jnp.concatenate([w[1:], jnp.asarray(x, w.dtype)[None]]), window, core(tr))
    return window, jnp.concatenate([mask[1:], jnp.ones((1,), bool)])


@dataclass(frozen=True)
class WindowInference(Inference):
    """Base of the methods that encode the last ``context_size`` transitions at every step."""

    context: ClassVar[str] = "window"
    meta_defaults: ClassVar[dict] = dict(prior_episodes=0, posterior_episodes=0, extra_episodes=1, adapt_episodes=1)
    split_batch: ClassVar[bool] = True

    # -- what a method defines ------------------------------------------------------------
    def posterior(self, params, window: Transition, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def encoding(self, mean: jax.Array, var: jax.Array, key: jax.Array) -> jax.Array:
        """The policy's view of the posterior: its mean by default."""
        return mean

    def params_of(self, state):
        """The encoder parameters inside the method's state."""
        return state.params

    # -- acting -------------------------------------------------------------------------------
    def _encode(self, state, window: Transition, mask: jax.Array, key: jax.Array) -> WindowBelief:
        mean, var = self.posterior(self.params_of(state), window, mask)
        key, k = jax.random.split(key)
        return WindowBelief(window=window, mask=mask, mean=mean, var=var, z=self.encoding(mean, var, k), key=key,
                            cls=jnp.zeros((), jnp.int32))

    def belief_init(self) -> WindowBelief:
        window, mask = empty_window(self.context_size, self.spec.obs_dim, self.spec.act_dim)
        zeros = jnp.zeros((self.latent_dim,), jnp.float32)
        return WindowBelief(window=window, mask=mask, mean=zeros, var=jnp.ones_like(zeros),
                            z=jnp.zeros((self.encoding_dim,), jnp.float32), key=jax.random.PRNGKey(0),
                            cls=jnp.zeros((), jnp.int32))

    def observe(self, state, b: WindowBelief, tr: Transition) -> WindowBelief:
        return self._encode(state, *push(b.window, b.mask, tr), b.key)

    def begin_episode(self, state, b: WindowBelief, new_task, prior, key) -> WindowBelief:
        """Every episode starts with an empty window (zero context): z from N(0, I)."""
        fresh = self.belief_init()
        return self._encode(state, fresh.window, fresh.mask, key)

    def encoding_after(self, state, storage, rows: jax.Array, key: jax.Array) -> jax.Array:
        """The encoding of the window that ends with each row."""
        windows, ok = window_context(storage, rows, self.context_size, shift=1)
        windows = core(windows)
        keys = jax.random.split(key, rows.shape[0])
        return jax.vmap(lambda w, m, k: self._encode(state, w, m, k).z)(windows, ok, keys)

    def policy_obs(self, b: WindowBelief, obs: jax.Array) -> jax.Array:
        return append_z(obs, b.z)

    def belief_stats(self, b: WindowBelief) -> dict:
        return {"mean": b.mean, "var": b.var}
