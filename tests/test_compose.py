"""HER, BIER and MBPO with TD3, DDPG and DSAC at 4 updates per step, and HER on the
shadow-hand tasks: the compositions the learning and resume tests (all SAC, HER on Fetch) do
not reach."""

from __future__ import annotations

import numpy as np
import pytest

import replaylab

COMMON = {"seeds": 2, "total_steps": 200, "warmup_steps": 100, "eval_interval": 200, "eval_episodes": 1,
          "checkpoint_interval": 0, "buffer_size": 200, "batch_size": 32, "replay_ratio": 4,
          "progress_bar": False, "tensorboard": False, "agent.hidden_sizes": [16, 16]}
RUNS = {
    "her": {"env": "FetchReach-v4", "her": "future", "replay": "nmer", "replay.refresh_every": 50},
    "her-hand-reach": {"env": "HandReach-v3", "her": "future"},
    "her-pen": {"env": "HandManipulatePen-v1", "her": "final", "replay": "lcer_rm", "replay.refresh_every": 50},
    "mbpo+bier": {"env": "Hopper-v5", "model": "mbpo", "replay": "bier", "replay.refresh_every": 50,
                  "model.ensemble": 3, "model.elites": 2, "model.hidden": 16, "model.layers": 2,
                  "model.rollout_batch": 64, "model.train_every": 100, "model.max_epochs": 3},
}


# DDPG differs from TD3 only in its update, which sees a batch, not where the batch came
# from; its MBPO + BIER cell (42-45 s) is left to TD3's. `make test` runs one HER cell, one
# MBPO + BIER cell and the two hand cells; the rest (17-48 s each with a cold compile cache)
# run in `make test-all`.
slow = pytest.mark.slow
CELLS = [("her", "td3"), pytest.param("her", "ddpg", marks=slow), pytest.param("her", "dsac", marks=slow),
         ("mbpo+bier", "td3"), pytest.param("mbpo+bier", "dsac", marks=slow),
         ("her-hand-reach", "sac"), ("her-pen", "sac")]


@pytest.mark.parametrize("run,agent", CELLS)
def test_goal_relabelling_model_data_and_gp_mixup_train_with_every_agent(agent, run, tmp_path):
    cfg = {**COMMON, **RUNS[run], "agent": agent, "run_dir": str(tmp_path / run)}
    if agent == "dsac":
        cfg["agent.num_quantiles"] = 4
    result = replaylab.train(cfg)
    assert np.all(np.isfinite(result.final_returns)), result.final_returns
    rows = [r for r in result.progress if r["env_step"] == 200]
    assert len(rows) == 2  # one per vmapped seed
    for r in rows:
        assert r["updates"] == 4 * 101, r  # replay_ratio updates per step from the warm-up's last step on
        assert np.isfinite(r["critic_loss"]) and np.isfinite(r["q"]), r
        if run.startswith("her"):
            assert 0.0 <= r["success_rate"] <= 1.0
        else:
            assert r["model_epochs"] >= 1 and np.isfinite(r["model_holdout_mse"]), r
