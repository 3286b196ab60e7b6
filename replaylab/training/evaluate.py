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

Non-stationary tasks (``change_steps > 0``): each episode's return is also split at its
first task switch (read from ``extras["task"]``, the task each step's reward was computed
with): ``before_switch`` + ``after_switch`` = the return, and ``switched`` marks the
episodes that had a switch (an episode without one has ``after_switch`` = 0). A few
environments of the first seed can be traced step by step through their last episode (the
family's ``response`` quantity, the active task's target and the belief's z), for the
time-response plot.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class Trace:
    """The first seed's last evaluation episode in a few environments, one entry per step."""

    label: str  # the response quantity (the family's ``response``)
    param: str  # the task parameter it tracks
    envs: list[int]  # environment indices
    response: list[np.ndarray]  # (T,) the response after each step
    target: list[np.ndarray]  # (T,) the tracked parameter of the task each step's reward used
    task: list[np.ndarray]  # (T,) that task's id
    z_mean: list[np.ndarray] | None  # (T, L) the belief's mean after each step; None without inference
    z_class: list[np.ndarray] | None  # (T,) the belief's class, for methods whose belief_stats give one


@dataclass
class EvalResult:
    """What ``evaluate`` returns; arrays are (seeds, environments, episodes)."""

    returns: np.ndarray
    before_switch: np.ndarray  # return up to the episode's first task switch (all of it without one)
    after_switch: np.ndarray  # return from the first switch on (0 without one)
    switched: np.ndarray  # bool: the episode's task switched
    trace: Trace | None = None
    stats: dict | None = None  # the final beliefs' z statistics (``belief_stats``), (seeds, environments, ...)
    success: np.ndarray | None = None  # goal envs: the episode ended solved (its last step's ``success``)


def evaluate(learner, state, envs: list[list[Env]], seeds: list[int], round_: int, tasks: Sequence[int] | None = None,
             episodes: int = 1, prior_episodes: int = 0, switch_pools: Sequence[np.ndarray | None] | None = None,
             on_frame: Callable[[np.ndarray], None] | None = None, trace: Sequence[int] = ()) -> EvalResult:
    """Run every environment for ``episodes`` episodes (see the module docstring).
    Environment j runs task ``tasks[j]``, switching within ``switch_pools[j]`` where
    switches are on. ``trace``: environments of the first seed whose last episode is
    recorded step by step (those whose env declares a ``response``)."""
    S, N = len(envs), len(envs[0])
    tasks = np.zeros(N, np.int64) if tasks is None else np.asarray(tasks)
    pools = switch_pools if switch_pools is not None else [None] * N
    returns = np.zeros((S, N, episodes))
    before, after = np.zeros((S, N, episodes)), np.zeros((S, N, episodes))
    switched = np.zeros((S, N, episodes), bool)
    success = np.full((S, N, episodes), np.nan)
    beliefs = learner.eval_beliefs(S, N)
    tracks_belief = bool(jax.tree.leaves(beliefs))
    traced = [int(j) for j in trace if getattr(envs[0][j], "response", None) is not None]
    rec = {j: {"response": [], "target": [], "task": [], "mean": [], "class": []} for j in traced}
    stats_fn = learner.eval_stats if traced and tracks_belief else None
    for k in range(episodes):
        extra = (k,) if k else ()  # the first episode's seeds are those of single-episode evaluation
        obs = np.stack([[envs[i][j].reset(episode_seed(seeds[i], EVAL_STREAM, round_, j, *extra), int(tasks[j]),
                                          pools[j]) for j in range(N)] for i in range(S)])
        if tracks_belief:
            flags = np.full((S, N), k == 0), np.full((S, N), k < prior_episodes)
            beliefs = learner.eval_begin(state, beliefs, *flags, _keys(seeds, round_, N, k))
        active = np.ones((S, N), bool)
        tracing = k == episodes - 1 and bool(traced)
        if on_frame is not None:
            on_frame(envs[0][0].render())
        for _ in range(MAX_EVAL_STEPS):
            actions = np.asarray(learner.policy(state, beliefs, obs))
            next_obs, rewards, terminals = obs.copy(), np.zeros((S, N), np.float32), np.zeros((S, N), bool)
            stepped = active.copy()
            for i, j in zip(*np.nonzero(stepped)):
                o, r, terminated, truncated, ex = envs[i][j].step(actions[i, j])
                returns[i, j, k] += r
                success[i, j, k] = ex.get("success", np.nan)
                task = ex.get("task")
                if task is not None and not switched[i, j, k] and int(task) != tasks[j]:
                    switched[i, j, k] = True
                (after if switched[i, j, k] else before)[i, j, k] += r
                if tracing and i == 0 and j in rec:
                    label, fn, p = envs[0][j].response
                    rec[j]["response"].append(float(fn(o, ex["info"])))
                    rec[j]["task"].append(int(task))
                    rec[j]["target"].append(float(envs[0][j].tasks.params[int(task), p]))
                next_obs[i, j], rewards[i, j], terminals[i, j] = o, r, terminated
                if terminated or truncated:
                    active[i, j] = False
            if tracks_belief:
                tr = Transition(obs=obs, action=actions, reward=rewards, next_obs=next_obs,
                                terminated=terminals, episode=np.zeros((S, N), np.int32),
                                step=np.zeros((S, N), np.int32))
                beliefs = learner.eval_observe(state, beliefs, tr, stepped)
                if tracing and stats_fn is not None:
                    stats = {k: np.asarray(v)[0, traced] for k, v in stats_fn(beliefs).items()}
                    mean, cls = stats.get("mean", np.zeros((len(traced), 0))), stats.get("class")
                    for n, j in enumerate(traced):
                        if stepped[0, j]:
                            rec[j]["mean"].append(mean[n])
                            if cls is not None:
                                rec[j]["class"].append(int(cls[n]))
            obs = next_obs
            if on_frame is not None and active[0, 0]:
                on_frame(envs[0][0].render())
            if not active.any():
                break
    stats = {k: np.asarray(v) for k, v in learner.eval_stats(beliefs).items()} if tracks_belief else None
    result = EvalResult(returns, before, after, switched, stats=stats,
                        success=None if np.isnan(success).all() else success)
    if traced:
        label, _, p = envs[0][traced[0]].response
        has_z, has_class = stats_fn is not None and rec[traced[0]]["mean"], bool(rec[traced[0]]["class"])
        result.trace = Trace(
            label=label, param=envs[0][traced[0]].tasks.names[p], envs=traced,
            response=[np.asarray(rec[j]["response"]) for j in traced],
            target=[np.asarray(rec[j]["target"]) for j in traced],
            task=[np.asarray(rec[j]["task"], np.int64) for j in traced],
            z_mean=[np.stack(rec[j]["mean"]) for j in traced] if has_z else None,
            z_class=[np.asarray(rec[j]["class"], np.int64) for j in traced] if has_class else None)
    return result


class SingleTaskEval:
    """``eval_episodes`` episodes of the one task; return_mean is their mean and, on a goal
    env (``goal``), success_rate the share of episodes that ended solved."""

    columns: tuple[str, ...] = ()
    trace_envs: tuple[int, ...] = ()

    def __init__(self, episodes: int, goal: bool = False):
        self.tasks = np.zeros(episodes, np.int64)
        self.episodes, self.prior_episodes, self.pools = 1, 0, None
        self.goal = goal
        if goal:
            self.columns = ("success_rate",)

    def open_log(self, run_dir, seeds: list[int], keep_rounds: int | None) -> None:
        """Nothing beyond progress.csv."""

    def log(self, env_step: int, result: EvalResult) -> None:
        """Nothing beyond progress.csv."""

    def summary(self, result: EvalResult) -> dict[str, np.ndarray]:
        r = result.returns[..., 0]
        out = {"return_mean": r.mean(1), "return_std": r.std(1)}
        if self.goal:
            out["success_rate"] = result.success[..., 0].mean(1)
        return out


SWITCH_COLUMNS = ("test_return_before_switch", "test_return_after_switch")
TRACED_TASKS = 4  # test tasks in the time-response plot


class AdaptationEval:
    """PEARL's protocol on every test task and ``train_sample`` train tasks. return_mean
    is the mean over test tasks of the last episode's return (PEARL's paper metric),
    return_std its spread over the test tasks. With ``switches`` (change_steps > 0) also
    ``test_return_before_switch`` and ``test_return_after_switch``: the last episode's
    return before and after its first task switch, averaged over the test tasks whose last
    episode switched (NaN for a seed where none did)."""

    columns: tuple[str, ...] = ("test_return_first", "test_return_last", "train_return_first", "train_return_last")

    def __init__(self, task_set, train_sample: int, episodes: int, prior_episodes: int, switches: bool = False):
        self.task_set = task_set
        self.switches = bool(switches)
        if self.switches:
            self.columns = type(self).columns + SWITCH_COLUMNS
        test_ids = np.arange(task_set.num_train, task_set.num_train + task_set.num_test)
        train_ids = np.arange(task_set.num_train)
        sample = np.unique(np.linspace(0, task_set.num_train - 1, train_sample).astype(np.int64)) \
            if train_sample else np.zeros(0, np.int64)
        self.num_test = len(test_ids)
        self.tasks = np.concatenate([test_ids, sample])
        self.pools = [test_ids] * len(test_ids) + [train_ids] * len(sample)
        self.episodes, self.prior_episodes = episodes, prior_episodes
        # the time-response plot's test tasks: up to TRACED_TASKS, spread over the task axis
        from replaylab.training.figures import task_axis

        order = np.argsort(task_axis(task_set.names, task_set.params[test_ids])[1], kind="stable")
        picks = np.unique(np.round(np.linspace(0, self.num_test - 1, min(TRACED_TASKS, self.num_test))).astype(int))
        self.trace_envs = tuple(int(j) for j in order[picks])

    def summary(self, result: EvalResult) -> dict[str, np.ndarray]:
        returns = result.returns
        test, train = returns[:, : self.num_test], returns[:, self.num_test:]
        nan = np.full(returns.shape[0], np.nan)
        out = {"return_mean": test[..., -1].mean(1), "return_std": test[..., -1].std(1),
               "test_return_first": test[..., 0].mean(1), "test_return_last": test[..., -1].mean(1)}
        out["train_return_first"] = train[..., 0].mean(1) if train.shape[1] else nan
        out["train_return_last"] = train[..., -1].mean(1) if train.shape[1] else nan
        if self.switches:
            n = self.num_test
            sw = result.switched[:, :n, -1]
            count = sw.sum(1)
            for col, part in zip(SWITCH_COLUMNS, (result.before_switch, result.after_switch)):
                total = np.where(sw, part[:, :n, -1], 0.0).sum(1)
                out[col] = np.divide(total, count, out=nan.copy(), where=count > 0)
        return out

    def open_log(self, run_dir, seeds: list[int], keep_rounds: int | None) -> None:
        """``tasks.csv`` (cut back to ``keep_rounds`` evaluations on resume), ``encodings/``
        and ``response/``."""
        from replaylab.training.logs import TaskCSV

        self.run_dir, self.seeds = Path(run_dir), seeds
        self.csv = TaskCSV(self.run_dir / "tasks.csv", self.task_set, self, len(seeds), keep_rounds)

    def log(self, env_step: int, result: EvalResult) -> None:
        """Per-task returns to tasks.csv; the time-response plot of the traced test tasks to
        response/; z (posterior mean +- std after the last episode, and the class where the
        method has one) against the task parameter for the test tasks, first seed, to encodings/."""
        from replaylab.training.figures import encodings_figure, response_figure

        self.csv.write(env_step, self.seeds, result)
        name = f"step_{env_step:010d}.png"
        title = f"seed {self.seeds[0]}"
        if result.trace is not None:
            response_figure(self.run_dir / "response" / name, result.trace, self.tasks, title)
        stats = result.stats
        if not stats or "mean" not in stats:
            return
        n = self.num_test
        mean, var = stats["mean"][0, :n], stats["var"][0, :n]
        classes = stats["class"][0, :n] if "class" in stats else None
        encodings_figure(self.run_dir / "encodings" / name, self.task_set.names, self.task_set.params[self.tasks[:n]],
                         mean, np.sqrt(var), title, classes=classes)
