"""Which task each training episode runs, as a pure function of (seed, episode).

Episodes come in *visits* of ``prior + posterior + extra`` episodes on one train task
(PEARL's data collection, counted in episodes): the belief is cleared when a visit
starts; the first ``prior`` episodes act with z from the prior, the rest with z from the
posterior; the ``extra`` ones are for RL only (not used as context). Visits go through
the train tasks in a fresh random order every ``num_tasks`` visits, so every task is
visited once per cycle (the warm-up covers every task when it lasts a cycle, as PEARL's
initial collection does). Being a function of (seed, episode), the schedule needs no
state: a resumed run recomputes it.

A single-task run is the special case of one task and visits of one episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TASK_STREAM = 2  # the schedule's random stream, apart from training (0) and evaluation (1) resets


@dataclass(frozen=True)
class TaskSchedule:
    num_tasks: int = 1
    prior: int = 0
    posterior: int = 0
    extra: int = 1

    @property
    def episodes_per_visit(self) -> int:
        return self.prior + self.posterior + self.extra

    @property
    def context_episodes(self) -> int:
        return self.prior + self.posterior

    def task(self, seed: int, episode: int) -> int:
        cycle, position = divmod(episode // self.episodes_per_visit, self.num_tasks)
        return int(_order(seed, cycle, self.num_tasks)[position])

    def starts(self, episode: int) -> tuple[bool, bool]:
        """(a new task starts, the episode acts with z from the prior)."""
        within = episode % self.episodes_per_visit
        return within == 0, within < self.prior


@lru_cache(maxsize=64)
def _order(seed: int, cycle: int, num_tasks: int) -> np.ndarray:
    return np.random.default_rng([seed, TASK_STREAM, cycle]).permutation(num_tasks)
