"""Replay storage (ring buffer, in-place adds, memory) and bootstrapping rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import replaylab
from replaylab.agents import make_agent
from replaylab.config import AgentConfig
from replaylab.replay import storage as rs
from replaylab.replay.storage import Transition


def _tr(i: int, obs_dim=3, act_dim=2) -> Transition:
    return Transition(obs=np.full(obs_dim, i, np.float32), action=np.full(act_dim, -i, np.float32),
                      reward=np.float32(i), next_obs=np.full(obs_dim, i + 1, np.float32),
                      terminated=np.bool_(i % 2), episode=np.int32(i // 3), step=np.int32(i % 3))


def test_ring_buffer_wraps_and_overwrites_the_oldest():
    s = rs.init(4, 3, 2)
    add = jax.jit(rs.add)
    for i in range(6):
        s = add(s, _tr(i))
    assert int(s.size) == 4 and int(s.ptr) == 2
    assert np.asarray(s.data.reward).tolist() == [4, 5, 2, 3]
    assert np.asarray(s.data.terminated).tolist() == [False, True, False, True]
    assert np.asarray(s.data.episode).tolist() == [1, 1, 0, 1]
    batch = rs.gather(s, jnp.array([1]))
    assert np.asarray(batch.next_obs)[0].tolist() == [6, 6, 6]


def test_adding_with_donation_writes_in_place():
    s = rs.init(100_000, 17, 6)
    add = jax.jit(rs.add, donate_argnums=0)
    s = add(s, _tr(0, 17, 6))
    before = s.data.obs.unsafe_buffer_pointer()
    for i in range(1, 5):
        s = add(s, _tr(i, 17, 6))
    assert s.data.obs.unsafe_buffer_pointer() == before
    assert np.asarray(s.data.obs[4]).tolist() == [4.0] * 17


def test_one_million_halfcheetah_transitions_fit_in_200_mb():
    shapes = jax.eval_shape(lambda: rs.init(1_000_000, 17, 6))
    nbytes = sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    assert nbytes <= 200e6, nbytes


def _ddpg_target_check(terminated: bool):
    cfg = AgentConfig(hidden_sizes=(8,), gamma=0.9)
    agent = make_agent("ddpg", 3, 1, cfg, 1)
    state = agent.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = Transition(obs=rng.normal(size=(5, 3)).astype(np.float32), action=rng.uniform(-1, 1, (5, 1)).astype(np.float32),
                       reward=rng.normal(size=5).astype(np.float32), next_obs=rng.normal(size=(5, 3)).astype(np.float32),
                       terminated=np.full(5, terminated), episode=np.zeros(5, np.int32), step=np.zeros(5, np.int32))
    q = agent.critic_net.apply(state.critic.params, batch.obs, batch.action)[0]
    next_q = agent.critic_net.apply(state.target_critic, batch.next_obs,
                                    agent.actor_net.apply(state.target_actor, batch.next_obs))[0]
    _, metrics, td, _ = agent.update(state, batch, jnp.ones(5), jax.random.PRNGKey(1), 0)
    return batch, q, next_q, metrics, td


def test_a_true_terminal_does_not_bootstrap():
    batch, q, _, metrics, td = _ddpg_target_check(terminated=True)
    y = batch.reward
    np.testing.assert_allclose(np.asarray(td), np.abs(q - y), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["critic_loss"]), 0.5 * np.mean((q - y) ** 2), rtol=1e-5)


def test_a_non_terminal_bootstraps_with_the_target_networks():
    batch, q, next_q, metrics, td = _ddpg_target_check(terminated=False)
    y = batch.reward + 0.9 * next_q
    np.testing.assert_allclose(np.asarray(td), np.abs(q - y), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["critic_loss"]), 0.5 * np.mean((q - y) ** 2), rtol=1e-5)


@pytest.mark.parametrize("env, truncates_only", [("Pendulum-v1", True), ("InvertedPendulum-v5", False)])
def test_time_limits_are_stored_as_non_terminal(small, env, truncates_only):
    """Pendulum only ever hits its 200-step limit: nothing may be stored as terminal.
    InvertedPendulum falls: those steps are terminal, and each ends an episode early."""
    run = replaylab.train(small(env=env, total_steps=450, warmup_steps=450, eval_interval=450, buffer_size=450))
    data = run.state.storage.data
    term = np.asarray(data.terminated)[0]
    steps = np.asarray(data.step)[0]
    episodes = np.asarray(data.episode)[0]
    if truncates_only:
        assert not term.any()
        assert steps.max() == 199 and set(np.unique(episodes)) == {0, 1, 2}
    else:
        assert term.sum() >= 3
        ends = np.nonzero(term)[0]
        assert all(episodes[e + 1] == episodes[e] + 1 and steps[e + 1] == 0 for e in ends if e + 1 < len(term))
        assert steps[ends].max() < 999
