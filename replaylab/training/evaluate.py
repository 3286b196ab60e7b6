"""Deterministic-policy evaluation on separate environment instances.

One protocol serves both settings. Each seed has N evaluation slots; each runs ``episodes``
consecutive episodes of its task with its own belief, which starts from the prior and is
updated between episodes:

- single task: N = ``eval_episodes`` slots, one episode each;
- meta-RL adaptation (PEARL's protocol): one slot per evaluated task, ``episodes`` =
  ``adapt_episodes``; the first ``prior_episodes`` act with z from the prior, later ones
  with z from the posterior over every transition of the task so far (so the posterior
  changes at episode boundaries only).

The slots run on a fixed pool of W <= N environments per seed (``pool_width``: at most
``EVAL_ENVS`` in all, so a large eval_episodes or seed count neither hangs on creating
environments nor exhausts memory): in waves of W slots that step in lockstep, one compiled
call picking the actions of all S x W, each environment reset at every episode. Episode
seeds and belief keys are derived from (seed, round, slot, episode), never from the
environment that runs it, so an evaluation is reproducible, independent of training and
of the pool width.

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
EVAL_ENVS = 256  # evaluation environments kept, over all seeds (at least one per seed)


def pool_width(seeds: int, slots: int) -> int:
    """Evaluation environments per seed for ``slots`` evaluation slots (episodes or tasks):
    all of them while seeds x slots <= EVAL_ENVS, else fewer, reused in waves; at least one
    (the policy is vmapped over the seeds, so every seed steps in every wave)."""
    return max(1, min(slots, EVAL_ENVS // max(seeds, 1)))


def episode_seed(seed: int, *stream: int) -> int:
    """A reset seed for one episode, decorrelated from every other (seed, stream) pair."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def _keys(seeds: Sequence[int], round_: int, slots: Sequence[int], width: int, episode: int) -> np.ndarray:
    """Belief keys (S, width, 2) for the slots of a wave; padding columns get zeros."""
    keys = np.zeros((len(seeds), width, 2), np.uint32)
    for i, s in enumerate(seeds):
        for c, j in enumerate(slots):
            keys[i, c] = np.random.SeedSequence([s, EVAL_STREAM, round_, j, episode, BELIEF_STREAM]).generate_state(2)
    return keys


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
    """Run every slot for ``episodes`` episodes (see the module docstring) on ``envs``, a
    pool of W environments per seed. Slot j runs task ``tasks[j]`` (default: W slots of
    task 0), switching within ``switch_pools[j]`` where switches are on. ``trace``: slots of
    the first seed whose last episode is recorded step by step (where the env declares a
    ``response``). ``on_frame`` gets the frames of seed 0's slot 0."""
    S, W = len(envs), len(envs[0])
    tasks = np.zeros(W, np.int64) if tasks is None else np.asarray(tasks)
    N = len(tasks)
    pools = switch_pools if switch_pools is not None else [None] * N
    returns = np.zeros((S, N, episodes))
    before, after = np.zeros((S, N, episodes)), np.zeros((S, N, episodes))
    switched = np.zeros((S, N, episodes), bool)
    success = np.full((S, N, episodes), np.nan)
    probe = envs[0][0]  # every environment of the pool is the same env; it answers for all
    beliefs = learner.eval_beliefs(S, W)
    tracks_belief = bool(jax.tree.leaves(beliefs))
    traced = [int(j) for j in trace if getattr(probe, "response", None) is not None]
    rec = {j: {"response": [], "target": [], "task": [], "mean": [], "class": []} for j in traced}
    stats_fn = learner.eval_stats if traced and tracks_belief else None
    final_stats = []  # per wave: the final beliefs' statistics of its slots
    for first in range(0, N, W):
        slots = list(range(first, min(first + W, N)))  # column c of this wave runs slot slots[c]
        n = len(slots)
        if first:
            beliefs = learner.eval_beliefs(S, W)
        wave_traced = [(c, j) for c, j in enumerate(slots) if j in rec]
        for k in range(episodes):
            extra = (k,) if k else ()  # the first episode's seeds are those of single-episode evaluation
            obs = np.stack([[envs[i][c].reset(episode_seed(seeds[i], EVAL_STREAM, round_, j, *extra), int(tasks[j]),
                                              pools[j]) for c, j in enumerate(slots)] for i in range(S)])
            if n < W:  # the last wave's unused columns: never stepped, their actions ignored
                obs = np.concatenate([obs, np.zeros((S, W - n) + obs.shape[2:], obs.dtype)], 1)
            if tracks_belief:
                flags = np.full((S, W), k == 0), np.full((S, W), k < prior_episodes)
                beliefs = learner.eval_begin(state, beliefs, *flags, _keys(seeds, round_, slots, W, k))
            active = np.zeros((S, W), bool)
            active[:, :n] = True
            tracing = k == episodes - 1 and bool(wave_traced)
            recording = on_frame is not None and first == 0
            if recording:
                on_frame(envs[0][0].render())
            for _ in range(MAX_EVAL_STEPS):
                actions = np.asarray(learner.policy(state, beliefs, obs))
                next_obs, rewards, terminals = obs.copy(), np.zeros((S, W), np.float32), np.zeros((S, W), bool)
                stepped = active.copy()
                task_now = np.zeros((S, W), np.int32)  # the task each step's reward was computed with
                for i, c in zip(*np.nonzero(stepped)):
                    j = slots[c]
                    o, r, terminated, truncated, ex = envs[i][c].step(actions[i, c])
                    returns[i, j, k] += r
                    success[i, j, k] = ex.get("success", np.nan)
                    task = ex.get("task")
                    task_now[i, c] = 0 if task is None else task
                    if task is not None and not switched[i, j, k] and int(task) != tasks[j]:
                        switched[i, j, k] = True
                    (after if switched[i, j, k] else before)[i, j, k] += r
                    if tracing and i == 0 and j in rec:
                        label, fn, p = probe.response
                        rec[j]["response"].append(float(fn(o, ex["info"])))
                        rec[j]["task"].append(int(task))
                        rec[j]["target"].append(float(probe.tasks.params[int(task), p]))
                    next_obs[i, c], rewards[i, c], terminals[i, c] = o, r, terminated
                    if terminated or truncated:
                        active[i, c] = False
                if tracks_belief:
                    tr = Transition(obs=obs, action=actions, reward=rewards, next_obs=next_obs,
                                    terminated=terminals, episode=np.zeros((S, W), np.int32),
                                    step=np.zeros((S, W), np.int32), extra={"task": task_now})
                    beliefs = learner.eval_observe(state, beliefs, tr, stepped)
                    if tracing and stats_fn is not None:
                        cols = [c for c, _ in wave_traced]
                        stats = {name: np.asarray(v)[0, cols] for name, v in stats_fn(beliefs).items()}
                        mean, cls = stats.get("mean", np.zeros((len(cols), 0))), stats.get("class")
                        for m, (c, j) in enumerate(wave_traced):
                            if stepped[0, c]:
                                rec[j]["mean"].append(mean[m])
                                if cls is not None:
                                    rec[j]["class"].append(int(cls[m]))
                obs = next_obs
                if recording and active[0, 0]:
                    on_frame(envs[0][0].render())
                if not active.any():
                    break
        if tracks_belief:
            final_stats.append({name: np.asarray(v)[:, :n] for name, v in learner.eval_stats(beliefs).items()})
    stats = {name: np.concatenate([w[name] for w in final_stats], 1) for name in final_stats[0]} \
        if tracks_belief else None
    result = EvalResult(returns, before, after, switched, stats=stats,
                        success=None if np.isnan(success).all() else success)
    if traced:
        label, _, p = probe.response
        has_z, has_class = stats_fn is not None and rec[traced[0]]["mean"], bool(rec[traced[0]]["class"])
        result.trace = Trace(
            label=label, param=probe.tasks.names[p], envs=traced,
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
