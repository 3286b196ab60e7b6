"""Known termination rules, as functions of the next observation (Gymnasium MuJoCo v4/v5).

An env owns its rule (``env.termination``): LCER recomputes the terminal flag of a mixed
transition from its interpolated next state, MBPO stops a model rollout where its predicted
state is terminal. These are the environments' own "healthy" checks written on the
observation (default observation settings); a test checks each against real episodes.
Environments that never terminate map to ``NEVER``. For any other id the rule is unknown
(``None``): a mixing method keeps the sample's stored flag, MBPO refuses the env.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def _finite(s):
    return jnp.all(jnp.isfinite(s), axis=-1)


def hopper(s):
    healthy = _finite(s) & jnp.all(jnp.abs(s[..., 1:]) < 100.0, axis=-1) & (s[..., 0] > 0.7) \
        & (jnp.abs(s[..., 1]) < 0.2)
    return ~healthy


def walker2d(s):
    healthy = (s[..., 0] > 0.8) & (s[..., 0] < 2.0) & (s[..., 1] > -1.0) & (s[..., 1] < 1.0)
    return ~healthy


def ant(s):
    healthy = _finite(s) & (s[..., 0] >= 0.2) & (s[..., 0] <= 1.0)
    return ~healthy


def inverted_pendulum(s):
    return ~(_finite(s) & (jnp.abs(s[..., 1]) <= 0.2))


def inverted_double_pendulum(s):
    # obs = [x, sin q1, sin q2, cos q1, cos q2, ...]; height of the tip (MBPO)
    sin1, sin2, cos1, cos2 = s[..., 1], s[..., 2], s[..., 3], s[..., 4]
    y = 0.6 * cos1 + 0.6 * (cos1 * cos2 - sin1 * sin2)
    return y <= 1.0


def NEVER(s):
    return jnp.zeros(s.shape[:-1], bool)


RULES: dict[str, Callable] = {
    "Hopper": hopper, "Walker2d": walker2d, "Ant": ant, "InvertedPendulum": inverted_pendulum,
    "InvertedDoublePendulum": inverted_double_pendulum,
    "HalfCheetah": NEVER, "Swimmer": NEVER, "Reacher": NEVER, "Pusher": NEVER, "Pendulum": NEVER,
}


def termination_rule(env_id: str) -> Callable | None:
    """The rule for a Gymnasium id such as ``Hopper-v5``; None if unknown."""
    name, _, version = env_id.partition("-v")
    if version in ("4", "5") or (name == "Pendulum" and version == "1"):
        return RULES.get(name)
    return None
