"""The interface of model-generated data: ``model=NAME``, ``model.PARAM=...``.

A model component learns the environment from the real replay and adds synthetic rows to
the batches. Its pure functions, for one seed (the learner vmaps or maps them over seeds):

- ``init(key)``: its state (models, optimiser, model buffer), in the learner's state and
  in checkpoints;
- ``upkeep(state, storage, key, length, policy) -> (state, metrics)``: a job every
  ``upkeep_every`` environment steps (and just before the first update): fit the models
  on the real ``storage``, then roll them out for ``length`` steps
  (``rollout_length(steps)``, computed by the loop from the steps since the warm-up) with ``policy(obs, key) -> action``,
  the agent's current exploration policy;
- ``mix(state, batch, key, batch_size) -> batch``: the real batch of ``real_rows`` rows (drawn by the
  replay method, relabelled by HER) completed to ``batch_size`` rows with model rows; the
  real rows come first and keep their storage ``rows``, so a sampler's feedback (PER)
  still reaches exactly its own rows.

``none`` (this class) learns nothing and leaves the batch as drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import jax

from replaylab.params import declared


@dataclass(frozen=True)
class ModelSpec:
    """What a model component needs from the run."""

    obs_dim: int
    act_dim: int
    termination: Callable | None = None  # the env's terminal rule on next observations


@dataclass(frozen=True)
class NoModel:
    """No model data."""

    spec: ModelSpec | None = None
    metric_names: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def params(cls) -> dict:
        return declared(cls)

    @property
    def upkeep_every(self) -> int:
        return 0

    def real_rows(self, batch_size: int) -> int:
        return batch_size

    def rollout_length(self, steps: int) -> int:
        return 0

    def init(self, key: jax.Array):
        return ()

    def upkeep(self, state, storage, key, length, policy):
        return state, {}

    def mix(self, state, batch, key, batch_size):
        return batch
