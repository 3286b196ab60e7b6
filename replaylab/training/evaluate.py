"""Deterministic-policy evaluation on separate environment instances.

One protocol serves both settings. Each seed gets N evaluation environments that step in
lockstep, one compiled call picking the actions of all S x N; each runs ``episodes``
consecutive episodes of its task with its own belief, which starts from the prior and is
updated between episodes:

- single task: N = ``eval_episodes`` environments, one episode each;
- meta-RL adaptation (PEARL's protocol): one environment per evaluated task, ``episodes`` =
  ``adapt_episodes``; the first ``prior_episodes`` act with z from the prior, later ones
  with z from the posterior over every transition of the task so far (so the posterior
  changes at episode boundaries only).

Episode seeds are derived from (seed, round, environment, episode), so an evaluation is
reproducible and independent of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from replaylab.envs import Env
from replaylab.replay.storage import Transition

TRAIN_STREAM, EVAL_STREAM = 0, 1
BELIEF_STREAM = 7  # the keys for z in evaluation, apart from the episodes' reset seeds
MAX_EVAL_STEPS = 100_000  # guard for environments without a time limit


def episode_seed(seed: int, *stream: int) -> int:
    """A reset seed for one episode, decorrelated from every other (seed, stream) pair."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def _keys(seeds: Sequence[int], round_: int, n: int, episode: int) -> np.ndarray:
    return np.stack([[np.random.SeedSequence([s, EVAL_STREAM, round_, j, episode, BELIEF_STREAM]).generate_state(2)
                      for j in range(n)] for s in seeds]).astype(np.uint32)


def evaluate(learner, state, envs: list[list[Env]], seeds: list[int], round_: int, tasks: Sequence[int] | None = None,
             episodes: int = 1, prior_episodes: int = 0, switch_pools: Sequence[np.ndarray | None] | None = None,
             on_frame: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, object]:
    """Returns of every episode, shape (seeds, environments, episodes), and the beliefs at
    the end (one per environment; () without inference). Environment j runs task
    ``tasks[j]``, switching within ``switch_pools[j]`` where switches are on."""
    S, N = len(envs), len(envs[0])
    tasks = np.zeros(N, np.int64) if tasks is None else np.asarray(tasks)
    pools = switch_pools if switch_pools is not None else [None] * N
    returns = np.zeros((S, N, episodes))
    beliefs = learner.eval_beliefs(S, N)
    tracks_belief = bool(jax.tree.leaves(beliefs))
    for k in range(episodes):
        extra = (k,) if k else ()  # the first episode's seeds are those of single-episode evaluation
        obs = np.stack([[envs[i][j].reset(episode_seed(seeds[i], EVAL_STREAM, round_, j, *extra), int(tasks[j]),
                                          pools[j]) for j in range(N)] for i in range(S)])
        if tracks_belief:
            flags = np.full((S, N), k == 0), np.full((S, N), k < prior_episodes)
            beliefs = learner.eval_begin(state, beliefs, *flags, _keys(seeds, round_, N, k))
        active = np.ones((S, N), bool)
        if on_frame is not None:
            on_frame(envs[0][0].render())
        for _ in range(MAX_EVAL_STEPS):
            actions = np.asarray(learner.policy(state, beliefs, obs))
            next_obs, rewards = obs.copy(), np.zeros((S, N), np.float32)
            stepped = active.copy()
            for i, j in zip(*np.nonzero(stepped)):
                o, r, terminated, truncated, _ = envs[i][j].step(actions[i, j])
                returns[i, j, k] += r
                next_obs[i, j], rewards[i, j] = o, r
                if terminated or truncated:
                    active[i, j] = False
            if tracks_belief:
                tr = Transition(obs=obs, action=actions, reward=rewards, next_obs=next_obs,
                                terminated=np.zeros((S, N), bool), episode=np.zeros((S, N), np.int32),
                                step=np.zeros((S, N), np.int32))
                beliefs = learner.eval_observe(state, beliefs, tr, stepped)
            obs = next_obs
            if on_frame is not None and active[0, 0]:
                on_frame(envs[0][0].render())
            if not active.any():
                break
    return returns, beliefs


class SingleTaskEval:
    """``eval_episodes`` episodes of the one task; return_mean is their mean."""

    columns: tuple[str, ...] = ()

    def __init__(self, episodes: int):
        self.tasks = np.zeros(episodes, np.int64)
        self.episodes, self.prior_episodes, self.pools = 1, 0, None

    def open_log(self, run_dir, seeds: list[int], keep_rounds: int | None) -> None:
        """Nothing beyond progress.csv."""

    def log(self, env_step: int, returns: np.ndarray, beliefs) -> None:
        """Nothing beyond progress.csv."""

    def summary(self, returns: np.ndarray) -> dict[str, np.ndarray]:
        r = returns[..., 0]
        return {"return_mean": r.mean(1), "return_std": r.std(1)}


class AdaptationEval:
    """PEARL's protocol on every test task and ``train_sample`` train tasks. return_mean
    is the mean over test tasks of the last episode's return (PEARL's paper metric),
    return_std its spread over the test tasks."""

    columns = ("test_return_first", "test_return_last", "train_return_first", "train_return_last")

    def __init__(self, task_set, train_sample: int, episodes: int, prior_episodes: int, belief_stats=None):
        """``belief_stats(belief) -> {"mean", "var"}`` of z, for the encodings plots."""
        self.task_set, self.belief_stats = task_set, belief_stats
        test_ids = np.arange(task_set.num_train, task_set.num_train + task_set.num_test)
        train_ids = np.arange(task_set.num_train)
        sample = np.unique(np.linspace(0, task_set.num_train - 1, train_sample).astype(np.int64)) \
            if train_sample else np.zeros(0, np.int64)
        self.num_test = len(test_ids)
        self.tasks = np.concatenate([test_ids, sample])
        self.pools = [test_ids] * len(test_ids) + [train_ids] * len(sample)
        self.episodes, self.prior_episodes = episodes, prior_episodes

    def summary(self, returns: np.ndarray) -> dict[str, np.ndarray]:
        test, train = returns[:, : self.num_test], returns[:, self.num_test:]
        nan = np.full(returns.shape[0], np.nan)
        out = {"return_mean": test[..., -1].mean(1), "return_std": test[..., -1].std(1),
               "test_return_first": test[..., 0].mean(1), "test_return_last": test[..., -1].mean(1)}
        out["train_return_first"] = train[..., 0].mean(1) if train.shape[1] else nan
        out["train_return_last"] = train[..., -1].mean(1) if train.shape[1] else nan
        return out

    def open_log(self, run_dir, seeds: list[int], keep_rounds: int | None) -> None:
        """``tasks.csv`` (cut back to ``keep_rounds`` evaluations on resume) and ``encodings/``."""
        from replaylab.training.logs import TaskCSV

        self.run_dir, self.seeds = Path(run_dir), seeds
        self.csv = TaskCSV(self.run_dir / "tasks.csv", self.task_set, self, len(seeds), keep_rounds)

    def log(self, env_step: int, returns: np.ndarray, beliefs) -> None:
        """Per-task returns to tasks.csv; z (posterior mean +- std after the last episode)
        against the task parameter for the test tasks, first seed, to encodings/."""
        self.csv.write(env_step, self.seeds, returns)
        if self.belief_stats is None or not jax.tree.leaves(beliefs):
            return
        from replaylab.training.figures import encodings_figure

        stats = jax.vmap(jax.vmap(self.belief_stats))(beliefs)
        n = self.num_test
        mean, var = np.asarray(stats["mean"])[0, :n], np.asarray(stats["var"])[0, :n]
        encodings_figure(self.run_dir / "encodings" / f"step_{env_step:010d}.png", self.task_set.names,
                         self.task_set.params[self.tasks[:n]], mean, np.sqrt(var), f"seed {self.seeds[0]}")
