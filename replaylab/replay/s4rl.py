"""S4RL mixup (Sinha et al. 2021, arXiv 2103.06326): mix a state with its own next state.

    i ~ uniform;  lam ~ Beta(alpha, alpha);  s = lam * s_i + (1 - lam) * s'_i
    a, r and s' are the sample's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from replaylab.params import opt
from replaylab.replay.mixing import beta
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather, uniform_indices


@dataclass(frozen=True)
class S4RL(Sampler):
    alpha: float = opt(0.75, "Beta(alpha, alpha) of the mixing coefficient", min=1e-3)

    def sample(self, state, storage, key, n):
        k_rows, k_lam = jax.random.split(key)
        rows = uniform_indices(storage, k_rows, n)
        b = gather(storage, rows)
        lam = beta(k_lam, self.alpha, n)[:, None]
        b = b.replace(obs=lam * b.obs + (1.0 - lam) * b.next_obs)
        return b, jnp.ones((n,), jnp.float32), rows, state
