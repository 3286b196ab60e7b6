"""S vmapped seeds in one process compute what S separate runs compute.

Same keys, same environment seeds, same updates: the results agree to float32 rounding.
(Bit-identity holds over the first updates; a few in-row reductions are summed in another
order under vmap, so tiny differences appear over longer runs.)"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import replaylab


@pytest.mark.parametrize("agent", ["sac", "td3", "ddpg"])
def test_vmapped_seeds_equal_separate_runs(small, agent):
    together = replaylab.train(small(agent=agent, seeds=3, seed=10, replay_ratio=2, total_steps=400))
    for i, seed in enumerate([10, 11, 12]):
        alone = replaylab.train(small(agent=agent, seeds=1, seed=seed, replay_ratio=2, total_steps=400))
        a = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x)[i], together.state))
        b = jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x)[0], alone.state))
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5, err_msg=f"seed {seed}")
        rows_together = [(r["env_step"], r["return_mean"], r["critic_loss"]) for r in together.progress
                         if r["seed"] == seed]
        rows_alone = [(r["env_step"], r["return_mean"], r["critic_loss"]) for r in alone.progress]
        assert [r[0] for r in rows_together] == [r[0] for r in rows_alone]
        np.testing.assert_allclose([r[1:] for r in rows_together], [r[1:] for r in rows_alone], rtol=1e-3)
    # and the seeds really are different runs
    assert len({r["return_mean"] for r in together.progress if r["env_step"] == 400}) == 3
