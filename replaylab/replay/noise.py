"""Gaussian-noise replay: multiplicative noise on s, a, r and s'.

    x <- x * (1 + eps),  eps ~ N(0, sigma^2), independently for s, a, r and s'

Noise is drawn per row by default: each row becomes an independent augmented sample.
The NMER suite drew one noise vector per field for the whole batch, so every row of an
update shared the same perturbation; that only rescales the batch and adds variance to
the gradient without adding diversity. ``replay.per_batch=true`` reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax

from replaylab.params import opt
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather


@dataclass(frozen=True)
class Noise(Sampler):
    sigma: float = opt(0.1, "std of the multiplicative noise", min=0.0)
    per_batch: bool = opt(False, "one noise draw per field for the whole batch (the original's choice)")

    goal_ready: ClassVar[bool] = False  # noisy s' and reward, exact achieved goal

    def augment(self, state, storage, rows, key, pool):
        k = jax.random.split(key, 4)
        b = gather(storage, rows)

        def noisy(x, kk):
            shape = x.shape[1:] if self.per_batch else x.shape
            return x * (1.0 + self.sigma * jax.random.normal(kk, shape, x.dtype))

        return b.replace(obs=noisy(b.obs, k[0]), action=noisy(b.action, k[1]), reward=noisy(b.reward, k[2]),
                         next_obs=noisy(b.next_obs, k[3]))
