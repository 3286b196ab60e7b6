"""The one training loop: every agent, sampler, inference method and number of seeds, on
single tasks and on task distributions.

Per environment step:

    step the S environments on the host with the pending actions (each episode runs the
       task the schedule gives it, a pure function of (seed, episode))
    -> two compiled calls: store the transitions; run ``replay_ratio`` updates (every
       ``update_every`` steps) and pick the next actions (uniformly random during the
       warm-up, with no updates), starting the belief of any episode that begins
    -> upkeep jobs, once just before the first update and then every so many steps: the
       sampler's index rebuild (``refresh_interval``); an inference method's encoder
       phase and relabelling (``phase_every``: CEMRL's epoch); a model's fit and
       rollouts (``upkeep_every``: MBPO's model training)
    -> every ``reset_interval`` updates: re-initialise the networks, keep the replay
    -> every ``eval_interval`` steps: evaluate (``evaluate.py``: plain episodes, or the
       adaptation protocol on a task distribution), write progress.csv
    -> every ``checkpoint_interval`` steps and at the end: checkpoint.

Exact resume: a checkpoint holds the device state (networks, optimisers, replay, sampler
state, JAX keys) and the host state (counters, current observations, pending actions).
An environment's state is rebuilt by resetting it with its episode's seed and replaying
the actions taken since, which works for every Gymnasium and dm_control task.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import jax
import numpy as np

from replaylab.agents import make_agent
from replaylab.config import Config
from replaylab.envs import env_columns
from replaylab.errors import RunError
from replaylab.inference import InferenceSpec, make_inference
from replaylab.models import ModelSpec, make_model
from replaylab.replay.methods import make_hindsight, make_relabel, make_sampler
from replaylab.replay.relabel import RelabelSpec
from replaylab.replay.sampler import ReplaySpec
from replaylab.replay.storage import Transition
from replaylab.replay.tasks import MultiTask
from replaylab.training import checkpoint
from replaylab.training.evaluate import (TRAIN_STREAM, AdaptationEval, SingleTaskEval, episode_seed, evaluate,
                                         pool_width)
from replaylab.training.learner import EpisodeStarts, Learner
from replaylab.training.logs import Console, Loggers, ProgressCSV, read_progress
from replaylab.training.schedule import TaskSchedule

BASE_COLUMNS = ["env_step", "updates", "seed", "return_mean", "return_std", "train_return", "episodes",
                "wall_time", "sps"]

Reserve = Callable[[], ContextManager[None]]  # the context the training state is allocated in


@dataclass
class Run:
    """A finished run: its directory, config, progress rows and final state (in memory)."""

    run_dir: Path
    config: Config
    progress: list[dict]
    final_returns: np.ndarray  # last evaluation, mean return per seed
    state: object = field(repr=False, default=None)


@dataclass
class HostState:
    """Everything outside the compiled state that the loop needs to continue exactly."""

    obs: np.ndarray  # (S, obs_dim) observation each env is at
    pending: np.ndarray  # (S, act_dim) actions chosen for the next step
    episode: np.ndarray  # (S,) index of the current episode of each env
    ep_step: np.ndarray  # (S,) steps taken in the current episode
    ep_return: np.ndarray  # (S,) return so far in the current episode
    ep_actions: list[list[np.ndarray]]  # actions since each env's last reset
    last_train_return: np.ndarray  # (S,) return of the last finished training episode
    phase_metrics: dict = field(default_factory=dict)  # name -> per-seed values of the last encoder phase
    env_step: int = 0
    updates: int = 0
    resets_done: int = 0
    eval_round: int = 0
    csv_rows: int = 0
    wall_time: float = 0.0

    COUNTERS = ("env_step", "updates", "resets_done", "eval_round", "csv_rows", "wall_time")
    # what a checkpoint's meta.json must hold (it has no checksum of its own)
    META_TYPES = {**dict.fromkeys(COUNTERS, int), "wall_time": (int, float), "phase_metrics": dict}

    def to_checkpoint(self) -> tuple[dict[str, np.ndarray], dict]:
        S, A = self.pending.shape
        longest = max((len(a) for a in self.ep_actions), default=0)
        actions = np.zeros((S, longest, A), np.float32)
        for i, acts in enumerate(self.ep_actions):
            if acts:
                actions[i, : len(acts)] = np.stack(acts)
        arrays = dict(obs=self.obs, pending=self.pending, episode=self.episode, ep_step=self.ep_step,
                      ep_return=self.ep_return, ep_actions=actions, last_train_return=self.last_train_return)
        return arrays, {**{k: getattr(self, k) for k in self.COUNTERS}, "phase_metrics": self.phase_metrics}

    @classmethod
    def from_checkpoint(cls, arrays: dict[str, np.ndarray], meta: dict) -> "HostState":
        ep_actions = [list(arrays["ep_actions"][i, : int(n)]) for i, n in enumerate(arrays["ep_step"])]
        return cls(obs=arrays["obs"], pending=arrays["pending"], episode=arrays["episode"],
                   ep_step=arrays["ep_step"], ep_return=arrays["ep_return"], ep_actions=ep_actions,
                   last_train_return=arrays["last_train_return"], phase_metrics=meta["phase_metrics"],
                   **{k: meta[k] for k in cls.COUNTERS})


@dataclass(frozen=True)
class Upkeep:
    """A job between environment steps: ``job(state, env_step) -> (state, metrics)`` just before the
    first update and at every multiple of ``every`` environment steps after it (``every``
    0: never); with ``episode_end``, instead after every step that ends the training
    episodes, from the warm-up's end on (no warm-up episode is relabelled)."""

    name: str
    every: int
    job: Callable
    episode_end: bool = False

    def due(self, env_step: int, warmup_steps: int, ended: np.ndarray) -> bool:
        if self.episode_end:
            return env_step >= warmup_steps and bool(ended.any())
        first = max(warmup_steps - 1, 1)
        return env_step == first or (env_step > first and env_step % self.every == 0)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg = cfg
        self.run_dir = run_dir
        self.seeds = cfg.seed_list
        self.envs = [cfg.make_env() for _ in self.seeds]
        env = self.envs[0]
        task_set = env.tasks  # None for a single task
        multi = task_set is not None
        self.schedule = TaskSchedule(task_set.num_train, cfg.prior_episodes, cfg.posterior_episodes,
                                     cfg.extra_episodes) if multi else TaskSchedule()
        self.train_pool = np.arange(task_set.num_train) if multi else None
        self.inference = make_inference(cfg.inference, dict(cfg.inference_cfg), InferenceSpec.of(env))
        self.protocol = AdaptationEval(task_set, cfg.eval_train_tasks, cfg.adapt_episodes, cfg.prior_episodes,
                                       switches=bool(cfg.change_steps)) if multi \
            else SingleTaskEval(cfg.eval_episodes, goal=env.goal is not None)
        width = pool_width(len(self.seeds), len(self.protocol.tasks))  # reused in waves, not one per episode
        self.eval_envs = [[cfg.make_env() for _ in range(width)] for _ in self.seeds]
        self.agent = make_agent(cfg.agent, env.obs_dim + self.inference.encoding_dim, env.act_dim, cfg.agent_cfg,
                                cfg.policy_delay, obs_grad=self.inference.needs_obs_grad)
        spec = ReplaySpec(obs_dim=env.obs_dim, act_dim=env.act_dim, capacity=cfg.buffer_size, termination=env.termination,
                          multi_task=multi)
        self.sampler = make_sampler(cfg.replay, dict(cfg.replay_cfg), spec)
        relabel_spec = RelabelSpec(type(env).reward_fn, task_set.params[: task_set.num_train],
                                   cfg.episode_length) if multi else None
        self.relabel = make_relabel(cfg.relabel, dict(cfg.relabel_cfg), relabel_spec)
        self.model = make_model(cfg.model, dict(cfg.model_cfg), ModelSpec(env.obs_dim, env.act_dim, env.termination))
        per_task = cfg.batch_size // cfg.meta_batch if multi and self.inference.split_batch else cfg.batch_size
        tasks = MultiTask(task_set.num_train, cfg.meta_batch, per_task, self.schedule.episodes_per_visit,
                          self.schedule.context_episodes, segments_per_task(cfg, task_set, self.schedule,
                                                                               self.relabel.relabels_episodes),
                          self.inference.context, self.inference.context_size) if multi \
            else None  # the learner's default: single-task batches (the real rows of them, with a model)
        self.env_columns = env_columns(env)  # what the env's extras hold that is stored
        self.learner = Learner(self.agent, self.sampler, capacity=cfg.buffer_size, replay_ratio=cfg.replay_ratio,
                               batch_size=cfg.batch_size, tasks=tasks, inference=self.inference, columns=self.env_columns,
                               reset_layers=cfg.reset_layers, reward_scale=cfg.agent_cfg.reward_scale,
                               relabel=self.relabel, hindsight=make_hindsight(cfg.her, dict(cfg.her_cfg), env.goal),
                               model=self.model)
        learner = self.learner
        model = self.model
        jobs = [Upkeep("refresh", self.sampler.refresh_interval, lambda st, _: (learner.refresh(st), {})),
                Upkeep("encoder", self.inference.phase_every, lambda st, _: learner.encoder_phase(st)),
                Upkeep("relabel", self.inference.phase_every, lambda st, _: (learner.relabel(st), {})),
                Upkeep("relabel_episode", 0, lambda st, _: (learner.relabel_episode(st), {}),
                       episode_end=self.relabel.relabels_episodes),
                Upkeep("relabel_upkeep", self.relabel.upkeep_every, lambda st, _: learner.relabel_upkeep(st)),
                Upkeep("model", model.upkeep_every,
                       lambda st, step: learner.model_upkeep(
                           st, np.int32(model.rollout_length(max(step - cfg.warmup_steps, 0)))))]
        self.upkeep = [job for job in jobs if job.every or job.episode_end]
        self.timed = ["collect", "update"] + [job.name for job in self.upkeep]  # seconds per progress row
        self.columns = BASE_COLUMNS + list(self.protocol.columns) + list(self.agent.metric_names) \
            + list(self.inference.metric_names) + list(self.inference.phase_metric_names) \
            + list(self.relabel.metric_names) + list(self.model.metric_names) + [f"time_{name}" for name in self.timed]
        self.ckpt_root = run_dir / "checkpoints"
        self.last_checkpoint: Path | None = None

    def _reset_env(self, i: int, episode: int) -> np.ndarray:
        seed = self.seeds[i]
        return self.envs[i].reset(episode_seed(seed, TRAIN_STREAM, episode), self.schedule.task(seed, episode),
                                  self.train_pool)

    def _starts(self, begins: np.ndarray, episodes: np.ndarray) -> EpisodeStarts:
        flags = np.array([self.schedule.starts(int(e)) for e in episodes], bool).reshape(-1, 2)
        return EpisodeStarts(now=begins, new_task=flags[:, 0] & begins, prior=flags[:, 1])

    # -- start and resume --------------------------------------------------------------
    def _fresh(self, reserve: Reserve = contextlib.nullcontext) -> tuple[object, HostState]:
        S = len(self.seeds)
        obs = np.stack([self._reset_env(i, 0) for i in range(S)])
        self.learner.compile_init(S)  # the memory turn then only allocates
        with reserve():
            state = jax.block_until_ready(self.learner.init(self.seeds))
        starts = self._starts(np.ones(S, bool), np.zeros(S, np.int64))
        state, pending = self.learner.act(state, obs, starts, self.cfg.warmup_steps > 0)
        host = HostState(obs=obs, pending=np.asarray(pending), episode=np.zeros(S, np.int64),
                         ep_step=np.zeros(S, np.int64), ep_return=np.zeros(S), ep_actions=[[] for _ in range(S)],
                         last_train_return=np.full(S, np.nan))
        return state, host

    def _restore(self, reserve: Reserve = contextlib.nullcontext) -> tuple[object, HostState]:
        template = self.learner.init_shapes(len(self.seeds))
        with reserve():
            state, arrays, meta, path = checkpoint.load_latest(self.ckpt_root, template, HostState.META_TYPES)
            jax.block_until_ready(state)
        self.last_checkpoint = path
        host = HostState.from_checkpoint(arrays, meta)
        for i, (env, s) in enumerate(zip(self.envs, self.seeds)):
            obs = self._reset_env(i, int(host.episode[i]))
            for a in host.ep_actions[i]:
                obs = env.step(a)[0]
            if not np.array_equal(obs, host.obs[i]):
                print(f"warning: seed {s}: replaying the current episode did not reproduce the saved "
                      "observation; the environment is not deterministic, so resume is not exact",
                      file=sys.stderr)
        return state, host

    # -- the loop -------------------------------------------------------------------------
    def run(self, resume: bool = False, reserve: Reserve = contextlib.nullcontext) -> Run:
        """Train to ``total_steps`` (from the newest checkpoint if ``resume``). The training
        state is allocated inside ``reserve()`` (``api.memory_reserved``: this machine's
        memory turn, with the memory checked again)."""
        cfg = self.cfg
        state, h = self._restore(reserve) if resume else self._fresh(reserve)
        csv = ProgressCSV(self.run_dir / "progress.csv", self.columns, keep_rows=h.csv_rows if resume else None)
        self.protocol.open_log(self.run_dir, self.seeds, h.eval_round if resume else None)
        logs = Loggers(self.run_dir, cfg.to_flat(), cfg.tensorboard, cfg.wandb, cfg.wandb_mode, cfg.wandb_project,
                       purge_step=h.env_step if resume else None)
        console = Console(cfg.total_steps, h.env_step, cfg.progress_bar)
        metrics = None
        last_eval = np.full(len(self.seeds), np.nan)
        t_start, t_mark, step_mark = time.perf_counter() - h.wall_time, time.perf_counter(), h.env_step
        self.timers = dict.fromkeys(self.timed, 0.0)
        try:
            while h.env_step < cfg.total_steps:
                t0 = time.perf_counter()
                tr, act_obs, starts = self._step_envs(h)
                h.env_step += 1
                t1 = time.perf_counter()
                if h.env_step >= cfg.warmup_steps and h.env_step % cfg.update_every == 0:
                    state, pending, metrics = self.learner.train(state, tr, act_obs, np.int32(h.updates), starts)
                    h.updates += cfg.replay_ratio
                else:
                    state = self.learner.store(state, tr)
                    state, pending = self.learner.act(state, act_obs, starts, h.env_step < cfg.warmup_steps)
                h.pending = np.asarray(pending)
                self.timers["collect"] += t1 - t0
                self.timers["update"] += time.perf_counter() - t1
                self._check_finite(state, h)
                state = self._upkeep(state, h, starts.now)
                if cfg.reset_interval and h.updates // cfg.reset_interval > h.resets_done:
                    state = self.learner.reset(state)
                    h.resets_done += 1
                console.update(1)
                if h.env_step % cfg.eval_interval == 0 or h.env_step == cfg.total_steps:
                    now = time.perf_counter()
                    sps = (h.env_step - step_mark) / max(now - t_mark, 1e-9)
                    h.wall_time = now - t_start
                    S = len(self.seeds)
                    row_extras = {**h.phase_metrics, **{f"time_{k}": [round(v, 3)] * S for k, v in self.timers.items()}}
                    last_eval = self._evaluate(state, h, {**(metrics or {}), **row_extras}, sps, csv, logs)
                    console.update(0, sps=f"{sps:.0f}", ret=f"{np.mean(last_eval):.1f}")
                    t_mark, step_mark = time.perf_counter(), h.env_step
                    self.timers = dict.fromkeys(self.timed, 0.0)
                if (cfg.checkpoint_interval and h.env_step % cfg.checkpoint_interval == 0) \
                        or h.env_step == cfg.total_steps:
                    h.wall_time = time.perf_counter() - t_start
                    self._save(state, h)
        finally:
            console.close()
            logs.close()
        return Run(self.run_dir, cfg, read_progress(csv.path), last_eval, state)

    def _upkeep(self, state, h: HostState, ended: np.ndarray):
        for job in self.upkeep:
            if job.due(h.env_step, self.cfg.warmup_steps, ended):
                if job.episode_end and not ended.all():  # the config check admits only fixed-length episodes
                    raise RunError(f"{job.name}: episodes ended at different steps in different seeds; "
                                   "trajectory relabelling needs fixed-length episodes")
                t = time.perf_counter()
                state, metrics = job.job(state, h.env_step)
                if metrics:
                    h.phase_metrics = {**h.phase_metrics, **{k: np.asarray(v).tolist() for k, v in metrics.items()}}
                jax.block_until_ready(state)
                self.timers[job.name] += time.perf_counter() - t
        return state

    def _step_envs(self, h: HostState) -> tuple[Transition, np.ndarray, EpisodeStarts]:
        S = len(self.envs)
        next_obs = np.empty_like(h.obs)
        reward = np.zeros(S, np.float32)
        terminated = np.zeros(S, bool)
        act_obs = np.empty_like(h.obs)
        done = np.zeros(S, bool)
        extras = []
        for i, env in enumerate(self.envs):
            next_obs[i], reward[i], terminated[i], truncated, extra = env.step(h.pending[i])
            extras.append(extra)
            h.ep_actions[i].append(h.pending[i].copy())
            done[i] = terminated[i] or truncated
        tr = Transition(obs=h.obs, action=h.pending, reward=reward, next_obs=next_obs, terminated=terminated,
                        episode=h.episode.astype(np.int32), step=h.ep_step.astype(np.int32),
                        extra={k: np.stack([e[k] for e in extras]) for k in self.env_columns})
        h.ep_return += reward
        h.ep_step += 1
        act_obs[:] = next_obs
        for i in np.nonzero(done)[0]:
            h.last_train_return[i] = h.ep_return[i]
            h.episode[i] += 1
            act_obs[i] = self._reset_env(i, int(h.episode[i]))
            h.ep_step[i], h.ep_return[i], h.ep_actions[i] = 0, 0.0, []
        h.obs = act_obs
        return tr, act_obs, self._starts(done, h.episode)

    def _check_finite(self, state, h: HostState) -> None:
        bad = np.asarray(state.first_bad_update)
        if (bad >= 0).any():
            i = int(np.argmax(bad >= 0))
            raise RunError(f"non-finite loss at gradient update {int(bad[i])} (seed {self.seeds[i]}, env step "
                           f"{h.env_step}); the run stopped and {self._last_good()}. Try lower learning rates.")

    def _last_good(self) -> str:
        return f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint \
            else "no checkpoint was written yet"

    def _check_finite_parameters(self, state, h: HostState) -> None:
        """Before a checkpoint: an update whose losses were finite can still have left
        non-finite parameters (the next update's losses would show it); never save them."""
        for name in ("agent", "inference", "belief"):
            for leaf in jax.tree.leaves(getattr(state, name)):
                x = np.asarray(leaf)
                if x.dtype.kind == "f" and not np.isfinite(x).all():
                    i = int(np.argmax(~np.isfinite(x).reshape(len(self.seeds), -1).all(1)))
                    raise RunError(f"non-finite {name} parameters at env step {h.env_step} (seed {self.seeds[i]}, "
                                   f"after update {h.updates}); the run stopped and {self._last_good()}. "
                                   "Try lower learning rates.")

    def run_protocol(self, state, round_: int, on_frame=None):
        """Evaluate ``state`` with this run's protocol: an ``evaluate.EvalResult`` (returns
        (S, N, episodes), the final beliefs, the returns split at task switches and the
        traced episodes)."""
        p = self.protocol
        return evaluate(self.learner, state, self.eval_envs, self.seeds, round_, p.tasks, p.episodes,
                        p.prior_episodes, p.pools, on_frame=on_frame, trace=p.trace_envs)

    def _evaluate(self, state, h: HostState, metrics, sps: float, csv: ProgressCSV, logs: Loggers):
        result = self.run_protocol(state, h.eval_round)
        summary = self.protocol.summary(result)
        self.protocol.log(h.env_step, result)
        h.eval_round += 1
        m = {k: np.asarray(v) for k, v in metrics.items()} if metrics is not None else {}
        rows = []
        for i, s in enumerate(self.seeds):
            row = dict(env_step=h.env_step, updates=h.updates, seed=s, train_return=float(h.last_train_return[i]),
                       episodes=int(h.episode[i]), wall_time=round(h.wall_time, 3), sps=round(sps, 2))
            row.update({k: float(v[i]) for k, v in summary.items()})
            row.update({k: float(v[i]) for k, v in m.items()})
            rows.append(row)
        csv.write(rows)
        h.csv_rows = csv.rows
        means = summary["return_mean"]
        scalars = {"eval/return": float(means.mean()), "perf/sps": sps}
        scalars.update({f"eval/return_seed{s}": float(r) for s, r in zip(self.seeds, means)})
        scalars.update({f"eval/{k}": float(np.mean(summary[k])) for k in self.protocol.columns})
        scalars.update({f"train/{k}": float(v.mean()) for k, v in m.items()})
        logs.scalars(h.env_step, scalars)
        return means

    def _save(self, state, h: HostState) -> None:
        self._check_finite_parameters(state, h)
        arrays, counters = h.to_checkpoint()
        meta = {**counters, "seeds": self.seeds}
        self.last_checkpoint = checkpoint.save(self.ckpt_root, h.env_step, state, arrays, meta)


def segments_per_task(cfg: Config, task_set, schedule: TaskSchedule, episode_copies: bool = False) -> int:
    """Segments the task index remembers per task: 4x the visits an average task has in a
    full buffer (at least 16), so a task drawn unusually often keeps its older visits too.
    With ``episode_copies`` (a relabelled copy after every episode) every episode is a segment."""
    visit_rows = cfg.episode_length if episode_copies else schedule.episodes_per_visit * cfg.episode_length
    visits = cfg.buffer_size / max(visit_rows, 1) / task_set.num_train
    return int(min(max(16, 4 * np.ceil(visits)), 4096))

