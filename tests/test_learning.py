"""Each agent must actually solve a small task within a fixed step budget."""

from __future__ import annotations

import numpy as np
import pytest

import replaylab

BUDGET = dict(env="Pendulum-v1", seeds=2, total_steps=8000, warmup_steps=1000, eval_interval=2000, eval_episodes=5,
              checkpoint_interval=0, progress_bar=False, tensorboard=False, buffer_size=10_000)
BUDGET.update({"agent.hidden_sizes": [64, 64], "agent.actor_lr": 1e-3, "agent.critic_lr": 1e-3,
               "agent.temperature_lr": 1e-3})


@pytest.mark.parametrize("agent", ["sac", pytest.param("dsac", marks=pytest.mark.slow), "td3", "ddpg"])
def test_agent_swings_up_pendulum(tmp_path, agent):
    run = replaylab.train({**BUDGET, "agent": agent, "run_dir": str(tmp_path / agent)})
    # random policy: about -1200; solved: about -150. "Within the budget": each seed's best
    # evaluation. SAC must also end there; TD3 and DDPG are known to oscillate after it, and so
    # did DSAC here (final -381 and -345 after best evaluations above the target; 265 s, so
    # DSAC's run is in `make test-all` only).
    best = [max(r["return_mean"] for r in run.progress if r["seed"] == s) for s in (0, 1)]
    assert np.mean(best) >= -250, best
    if agent == "sac":
        assert np.mean(run.final_returns) >= -250, run.final_returns


@pytest.mark.parametrize("replay", ["nmer", "lcer_rm"])
def test_sac_with_augmented_replay_swings_up_pendulum(tmp_path, replay):
    run = replaylab.train({**BUDGET, "agent": "sac", "replay": replay, "run_dir": str(tmp_path / replay)})
    best = [max(r["return_mean"] for r in run.progress if r["seed"] == s) for s in (0, 1)]
    assert np.mean(best) >= -250, best
    # NMER must also end there. LCER-RM reaches it but can oscillate after it: in one run
    # here its final evaluations were -198 and -447 after best evaluations above the target.
    if replay == "nmer":
        assert np.mean(run.final_returns) >= -300, run.final_returns
