"""S4RL mixup (Sinha et al. 2021, arXiv 2103.06326): mix a state with its own next state.

    i ~ uniform;  lam ~ Beta(alpha, alpha);  s = lam * s_i + (1 - lam) * s'_i
    a, r and s' are the sample's own.
"""

from __future__ import annotations

from dataclasses import dataclass


from replaylab.params import opt
from replaylab.replay.mixing import beta
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import gather


@dataclass(frozen=True)
class S4RL(Sampler):
    alpha: float = opt(0.75, "Beta(alpha, alpha) of the mixing coefficient", min=1e-3)

    def augment(self, state, storage, rows, key, pool):
        b = gather(storage, rows)
        lam = beta(key, self.alpha, rows.shape[0])[:, None]
        return b.replace(obs=lam * b.obs + (1.0 - lam) * b.next_obs)
