"""Agents: pure init / explore / act / update functions over pytree states."""

from __future__ import annotations

from replaylab.agents.base import Agent
from replaylab.agents.ddpg import DDPG
from replaylab.agents.dsac import DSAC
from replaylab.agents.sac import SAC
from replaylab.agents.td3 import TD3
from replaylab.agents.config import AgentConfig


def make_agent(name: str, obs_dim: int, act_dim: int, cfg: AgentConfig, policy_delay: int,
               obs_grad: bool = False) -> Agent:
    if name == "sac":
        return SAC(obs_dim, act_dim, cfg, policy_delay, obs_grad)
    if name == "dsac":
        return DSAC(obs_dim, act_dim, cfg, policy_delay, obs_grad)
    if name == "td3":
        return TD3.from_config(obs_dim, act_dim, cfg, policy_delay, obs_grad)
    if name == "ddpg":
        return DDPG.from_config(obs_dim, act_dim, cfg, policy_delay, obs_grad)
    raise ValueError(f"agent={name}: expected one of sac, dsac, td3, ddpg")


__all__ = ["Agent", "SAC", "DSAC", "TD3", "DDPG", "make_agent"]
