"""Learnt models of the environment and the synthetic data they add to batches (``model=NAME``)."""

from __future__ import annotations

from replaylab.models.base import ModelSpec, NoModel
from replaylab.models.mbpo import MBPO

MODELS: dict[str, type[NoModel]] = {"none": NoModel, "mbpo": MBPO}


def make_model(name: str, params: dict, spec: ModelSpec) -> NoModel:
    return MODELS[name](spec=spec, **params)


__all__ = ["MODELS", "ModelSpec", "NoModel", "make_model"]
