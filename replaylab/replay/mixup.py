"""Naive mixup (Zhang et al. 2018 applied to transitions): a uniformly random partner.

    i, j ~ uniform over the pool (the buffer, or one task's rows in a meta batch);  lam ~ Beta(alpha, alpha);  row = lam * T_i + (1 - lam) * T_j

A pair that touches a true terminal stays the real transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from replaylab.params import opt
from replaylab.replay.mixing import beta, pair_or_real
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather


@dataclass(frozen=True)
class Mixup(Sampler):
    alpha: float = opt(0.75, "Beta(alpha, alpha) of the mixing coefficient", min=1e-3)

    def augment(self, state, storage, rows, key, pool):
        n = rows.shape[0]
        k_partner, k_lam = jax.random.split(key)
        partner = pool.draw(k_partner)  # the same task's rows in a meta batch
        return pair_or_real(gather(storage, rows), gather(storage, partner), beta(k_lam, self.alpha, n),
                            pool.same_pool(rows, partner))
