"""CT, Continuous Transition (Lin et al. 2020, arXiv 2011.14487).

    i ~ uniform;  j = the next step of i's episode (i itself at an episode end)
    lam ~ Beta(alpha, alpha);  row = lam * T_i + (1 - lam) * T_j   (s, a, r, s')

A pair that touches a true terminal, or spans a task switch inside an episode, stays the
real transition. The paper tunes alpha
automatically; like the NMER suite's baseline we keep it fixed (``replay.alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from replaylab.params import opt
from replaylab.replay.mixing import beta, pair_or_real
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import Storage, gather, holds_step


def next_in_episode(storage: Storage, rows: jax.Array) -> jax.Array:
    """The row holding the next step of the same episode, or the row itself."""
    nxt, same = holds_step(storage, rows, 1)
    return jnp.where(same & (nxt != storage.ptr) & (nxt < storage.size), nxt, rows)


@dataclass(frozen=True)
class CT(Sampler):
    alpha: float = opt(0.75, "Beta(alpha, alpha) of the mixing coefficient", min=1e-3)

    def augment(self, state, storage, rows, key, pool):
        partner = next_in_episode(storage, rows)
        return pair_or_real(gather(storage, rows), gather(storage, partner), beta(key, self.alpha, rows.shape[0]),
                            (partner != rows) & pool.same_pool(rows, partner))
