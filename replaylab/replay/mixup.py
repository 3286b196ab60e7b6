"""Naive mixup (Zhang et al. 2018 applied to transitions): a uniformly random partner.

    i, j ~ uniform;  lam ~ Beta(alpha, alpha);  row = lam * T_i + (1 - lam) * T_j

A pair that touches a true terminal stays the real transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from replaylab.params import opt
from replaylab.replay.mixing import beta, pair_or_real
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather, uniform_indices


@dataclass(frozen=True)
class Mixup(Sampler):
    alpha: float = opt(0.75, "Beta(alpha, alpha) of the mixing coefficient", min=1e-3)

    def augment(self, state, storage, rows, key):
        n = rows.shape[0]
        k_partner, k_lam = jax.random.split(key)
        partner = uniform_indices(storage, k_partner, n)
        return pair_or_real(gather(storage, rows), gather(storage, partner), beta(k_lam, self.alpha, n),
                            jnp.ones((n,), bool))
