"""Convex combinations of transitions: the operation shared by every mixup method.

``mix(x, y, lam)`` returns lam * x + (1 - lam) * y for s, a, r and s', one lam per row
(every field of a row uses the same lam, so the row lies on the segment between its two
endpoints). Everything else (terminated, episode, step) is taken from ``x``, the sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from replaylab.replay.storage import Transition


def beta(key: jax.Array, alpha: float, n: int) -> jax.Array:
    """One mixing coefficient per row, lam ~ Beta(alpha, alpha); alpha = 1 is U(0, 1)."""
    return jax.random.beta(key, alpha, alpha, (n,), jnp.float32)


def _rows(lam: jax.Array, x: jax.Array) -> jax.Array:
    return lam.reshape(lam.shape + (1,) * (x.ndim - 1))


def mix(x: Transition, y: Transition, lam: jax.Array) -> Transition:
    def m(a, b):
        w = _rows(lam, a)
        return w * a + (1.0 - w) * b

    return x.replace(obs=m(x.obs, y.obs), action=m(x.action, y.action), reward=m(x.reward, y.reward),
                     next_obs=m(x.next_obs, y.next_obs))


def where_rows(mask: jax.Array, x: Transition, y: Transition) -> Transition:
    """Row-wise select: ``x`` where ``mask`` is True, else ``y``."""
    return jax.tree.map(lambda a, b: jnp.where(_rows(mask, a), a, b), x, y)


def pair_or_real(sample: Transition, partner: Transition, lam: jax.Array, valid: jax.Array) -> Transition:
    """Mix each sample with its partner; a row whose pair is not ``valid`` or touches a
    true terminal stays the real sample (a terminal has no meaningful s' to mix)."""
    ok = valid & ~sample.terminated & ~partner.terminated
    return where_rows(ok, mix(sample, partner, lam), sample)
