"""The registry of replay methods: ``replay=NAME`` picks one, ``replay.PARAM=...`` sets it."""

from __future__ import annotations

from replaylab.replay.bier import BIER
from replaylab.replay.ct import CT
from replaylab.replay.lcer import LCERClusterCentre, LCERRandomMember
from replaylab.replay.mixup import Mixup
from replaylab.replay.nmer import NMER
from replaylab.replay.noise import Noise
from replaylab.replay.her import STRATEGIES as HINDSIGHT
from replaylab.replay.her import Hindsight
from replaylab.replay.hfr import HFR
from replaylab.replay.per import PER
from replaylab.replay.s4rl import S4RL
from replaylab.replay.relabel import Relabel, RelabelSpec
from replaylab.replay.sampler import ReplaySpec, Sampler, Uniform

SAMPLERS: dict[str, type[Sampler]] = {
    "uniform": Uniform, "per": PER, "ct": CT, "s4rl": S4RL, "mixup": Mixup, "noise": Noise,
    "nmer": NMER, "lcer_cc": LCERClusterCentre, "lcer_rm": LCERRandomMember, "bier": BIER,
}


def make_sampler(name: str, params: dict, spec: ReplaySpec) -> Sampler:
    return SAMPLERS[name](spec=spec, **params)


RELABELS: dict[str, type[Relabel]] = {"none": Relabel, "hfr": HFR}


def make_relabel(name: str, params: dict, spec: RelabelSpec | None) -> Relabel:
    return RELABELS[name](spec=spec, **params)


def make_hindsight(name: str, params: dict, goal) -> Hindsight:
    """``goal``: the env's GoalSpec, or None (not a goal env)."""
    return HINDSIGHT[name](goal=goal, **params)
