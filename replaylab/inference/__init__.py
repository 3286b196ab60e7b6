"""Task inference for meta-RL: ``inference=NAME`` picks one, ``inference.PARAM=...`` sets it."""

from __future__ import annotations

from replaylab.inference.base import Inference, InferenceSpec
from replaylab.inference.cemrl import CEMRL
from replaylab.inference.oracle import Oracle
from replaylab.inference.pearl import PEARL
from replaylab.inference.smrl import SMRL

INFERENCES: dict[str, type[Inference]] = {"none": Inference, "pearl": PEARL, "smrl": SMRL, "cemrl": CEMRL,
                                          "oracle": Oracle}


def make_inference(name: str, params: dict, spec: InferenceSpec) -> Inference:
    return INFERENCES[name](spec=spec, **params)


__all__ = ["Inference", "InferenceSpec", "INFERENCES", "make_inference"]
