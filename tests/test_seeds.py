"""S vmapped seeds in one process compute exactly what S separate runs compute."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import replaylab


@pytest.mark.parametrize("agent", ["sac", "td3", "ddpg"])
def test_vmapped_seeds_equal_separate_runs(small, agent):
    together = replaylab.train(small(agent=agent, seeds=3, seed=10, replay_ratio=2))
    for i, seed in enumerate([10, 11, 12]):
        alone = replaylab.train(small(agent=agent, seeds=1, seed=seed, replay_ratio=2))
        a = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x)[i], together.state))
        b = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x)[0], alone.state))
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), f"seed {seed} differs"
        rows_together = [(r["env_step"], r["return_mean"], r["critic_loss"]) for r in together.progress
                         if r["seed"] == seed]
        rows_alone = [(r["env_step"], r["return_mean"], r["critic_loss"]) for r in alone.progress]
        assert rows_together == rows_alone
    # and the seeds really are different runs
    assert len({r["return_mean"] for r in together.progress if r["env_step"] == 600}) == 3
