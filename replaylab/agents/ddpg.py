"""DDPG (Lillicrap et al., 2016) in its modern form (Fujimoto et al.'s "OurDDPG").

DDPG is TD3 without its three additions: one critic, no target policy smoothing, and
actor and targets updated on every step (``agent.policy_delay`` still applies if set).
Writing it as that special case keeps one implementation of the shared algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

from replaylab.agents.td3 import TD3


@dataclass(frozen=True)
class DDPG(TD3):
    @classmethod
    def from_config(cls, obs_dim, act_dim, cfg, policy_delay, obs_grad=False):
        return cls(obs_dim, act_dim, cfg, policy_delay, obs_grad, num_critics=1, target_noise=0.0,
                   target_noise_clip=0.0)
