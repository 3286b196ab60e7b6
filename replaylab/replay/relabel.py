"""Trajectory relabelling on a task distribution: ``relabel=NAME``, ``relabel.PARAM=...``.

A relabeller sees every training trajectory once it is stored and may store a copy of
it with rewards (and terminations) recomputed for another train task by the env's
``reward_fn``: only rewards change, the states and actions are real. The copies are
extra rows of the same storage (a buffer of N rows holds N rows, copies included);
environment-step counts count real steps only.

``none`` stores nothing extra; ``hfr`` (``replay/hfr.py``) is DMRLAD's "augmented data".
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import numpy as np


@dataclass(frozen=True, eq=False)
class RelabelSpec:
    """What a relabeller needs from the run: the env's ``reward_fn(xp, obs, action,
    next_obs, info, params)``, the train tasks' parameters (T, P) and the episode length."""

    reward_fn: Callable[..., Any]
    train_params: np.ndarray
    episode_length: int


@dataclass(frozen=True)
class Relabel:
    """No relabelling."""

    spec: RelabelSpec | None = None
    active: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]] = ()

    def init(self):
        return ()

    @classmethod
    def params(cls) -> dict:
        return {f.name: f for f in fields(cls) if "help" in f.metadata}
