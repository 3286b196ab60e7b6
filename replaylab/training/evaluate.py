"""Deterministic-policy evaluation on separate environment instances.

Each seed gets ``E`` evaluation environments that step in lockstep; one compiled call
picks the actions of all S x E of them. Episode seeds are derived from (seed, round,
episode), so an evaluation is reproducible and independent of training.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from replaylab.envs import Env

TRAIN_STREAM, EVAL_STREAM = 0, 1
MAX_EVAL_STEPS = 100_000  # guard for environments without a time limit


def episode_seed(seed: int, *stream: int) -> int:
    """A reset seed for one episode, decorrelated from every other (seed, stream) pair."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def evaluate(act: Callable, state, envs: list[list[Env]], seeds: list[int], round_: int,
             on_frame: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Returns of one episode per evaluation environment, shape (seeds, episodes)."""
    S, E = len(envs), len(envs[0])
    obs = np.stack([[envs[i][j].reset(episode_seed(seeds[i], EVAL_STREAM, round_, j)) for j in range(E)]
                    for i in range(S)])
    returns = np.zeros((S, E))
    active = np.ones((S, E), bool)
    if on_frame is not None:
        on_frame(envs[0][0].render())
    for _ in range(MAX_EVAL_STEPS):
        actions = np.asarray(act(state, obs))
        for i, j in zip(*np.nonzero(active)):
            o, r, terminated, truncated = envs[i][j].step(actions[i, j])
            returns[i, j] += r
            obs[i, j] = o
            if terminated or truncated:
                active[i, j] = False
        if on_frame is not None and active[0, 0]:
            on_frame(envs[0][0].render())
        if not active.any():
            break
    return returns
