"""Periodic resets: fresh networks and optimiser state, the replay kept."""

from __future__ import annotations

import jax
import numpy as np

from replaylab.agents import make_agent
from replaylab.agents.config import AgentConfig
from replaylab.replay.methods import make_sampler
from replaylab.replay.sampler import ReplaySpec
from replaylab.replay.storage import Transition
from replaylab.training.learner import Learner


def _learner(reset_layers: int) -> tuple[Learner, object]:
    agent = make_agent("sac", 3, 2, AgentConfig(hidden_sizes=(8, 8)), 1)
    learner = Learner(agent, make_sampler("uniform", {}, ReplaySpec(3, 2, 64)), capacity=64, batch_size=8, replay_ratio=2,
                      reset_layers=reset_layers)
    state = learner.init([0, 1])
    tr = Transition(obs=np.ones((2, 3), np.float32), action=np.zeros((2, 2), np.float32), reward=np.ones(2, np.float32),
                    next_obs=np.ones((2, 3), np.float32), terminated=np.zeros(2, bool),
                    episode=np.zeros(2, np.int32), step=np.zeros(2, np.int32))
    for t in range(5):
        state, _, _ = learner.train(state, tr, np.ones((2, 3), np.float32), np.int32(2 * t))
    return learner, state


def _layers(state, net="actor"):
    params = getattr(state.agent, net).params["params"]
    inner = params["pi"] if "pi" in params else params["q"]
    return {k: np.asarray(v["kernel"]) for k, v in inner.items()}


def test_full_reset_reinitialises_everything_but_the_replay():
    learner, state = _learner(0)
    trained = _layers(state)
    size = np.asarray(state.storage.size).copy()
    reward = np.asarray(state.storage.data.reward).copy()
    state = learner.reset(state)
    fresh = _layers(state)
    assert all(not np.array_equal(trained[k], fresh[k]) for k in trained)
    assert np.array_equal(np.asarray(state.storage.size), size)
    assert np.array_equal(np.asarray(state.storage.data.reward), reward)
    # optimiser state is fresh: Adam's step counters are zero again
    counts = [np.asarray(x) for x in jax.tree.leaves(state.agent.actor.opt_state) if np.asarray(x).dtype == np.int32]
    assert all((c == 0).all() for c in counts)
    # a fresh key: not the initial parameters again (the seed repository's quirk)
    init = _layers(learner.init([0, 1]))
    assert all(not np.array_equal(init[k], fresh[k]) for k in init)


def test_partial_reset_touches_only_the_last_k_layers():
    learner, state = _learner(1)
    before_actor, before_critic = _layers(state), _layers(state, "critic")
    state = learner.reset(state)
    after_actor, after_critic = _layers(state), _layers(state, "critic")
    for before, after in ((before_actor, after_actor), (before_critic, after_critic)):
        assert np.array_equal(before["layer_0"], after["layer_0"])
        assert np.array_equal(before["layer_1"], after["layer_1"])
        assert not np.array_equal(before["layer_2"], after["layer_2"])
