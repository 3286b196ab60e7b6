"""Trajectory relabelling on a task distribution: ``relabel=NAME``, ``relabel.PARAM=...``.

A relabeller sees every training trajectory once it is stored and may store a copy of
it with rewards (and terminations) recomputed for another train task by the env's
``reward_fn``: only rewards change, the states and actions are real. The copies are
extra rows of the same storage (a buffer of N rows holds N rows, copies included);
environment-step counts count real steps only.

``none`` stores nothing extra; ``hfr`` (``replay/hfr.py``) is DMRLAD's "augmented data".

A relabeller's pure functions, for one seed (the learner vmaps them over seeds):

- ``init()``: its state (in the learner's state and in checkpoints);
- ``episode(state, storage, index, key, ctx) -> (rows, state)``: the rows to store after a
  training episode ends (``relabels_episodes``); the learner writes them like real rows;
- ``upkeep(state, storage, index, key, ctx) -> (state, metrics)``: a job every
  ``upkeep_every`` environment steps (0: none).

``ctx`` (``RelabelContext``) is what it may ask of the agent and the inference method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from replaylab.params import declared


@dataclass(frozen=True, eq=False)
class RelabelSpec:
    """What a relabeller needs from the run: the env's ``reward_fn(xp, obs, action,
    next_obs, info, params)``, the train tasks' parameters (T, P) and the episode length."""

    reward_fn: Callable[..., Any]
    train_params: np.ndarray
    episode_length: int


@dataclass(frozen=True)
class RelabelContext:
    """One seed's view of the learner's components (functions closed over its state)."""

    replay: Callable[..., Any]  # (trajectory (L, ...), key) -> (rows as stored, belief after it)
    policy_obs: Callable[..., Any]  # (belief, obs (B, D)) -> what the policy and critic see
    value: Callable[..., Any]  # (policy observations (n, D + E), key) -> (n,) the agent's value
    encoding_after: Callable[..., Any]  # (stored rows (n,), key) -> (n, E) z after each row's window
    has_data: Any  # (T,) which train tasks have stored rows


@dataclass(frozen=True)
class Relabel:
    """No relabelling."""

    spec: RelabelSpec | None = None
    relabels_episodes: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]] = ()

    @property
    def upkeep_every(self) -> int:
        return 0

    def init(self):
        return ()

    def episode(self, state, storage, index, key, ctx: RelabelContext):
        raise NotImplementedError

    def upkeep(self, state, storage, index, key, ctx: RelabelContext):
        return state, {}

    @classmethod
    def params(cls) -> dict:
        return declared(cls)
