"""The compiled side of training: everything that touches parameters and replay.

Each function is written for one seed and then ``vmap``-ed over the seed axis, so S seeds
in one process compute exactly what S separate runs with those seeds compute. Per
environment step the loop makes two compiled calls (see ``Learner.train`` for why two):

    store(state, transition)                    write the row in place, sampler and task
                                                index upkeep, fold it into the belief
    update(state, next_obs, step, starts)       ``replay_ratio`` x (sample, relabel goals,
                                                condition on the task, update, feedback) in a
                                                ``lax.scan``, then the next action

or ``store`` and ``act`` on steps without updates (warm-up, ``update_every`` > 1). The
same code serves every agent, replay method, inference method (``none`` for a single
task) and seed count; what differs is in those components, not here.

The state is donated, so the replay storage is updated in place and never copied.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from replaylab.agents import Agent
from replaylab.inference import Inference, InferenceSpec
from replaylab.models import NoModel
from replaylab.replay import storage as replay_storage
from replaylab.replay.her import Hindsight
from replaylab.replay.relabel import Relabel, RelabelContext
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import Storage, Transition
from replaylab.replay.tasks import SingleTask


@struct.dataclass
class SeedState:
    """Everything one seed's learner owns; the training state stacks these along axis 0."""

    agent: Any
    inference: Any  # the task encoder's parameters and optimiser state (() without inference)
    belief: Any  # what the acting policy knows of the current task (() without inference)
    storage: Storage
    sampler: Any
    tasks: Any  # the task index of a multi-task replay (() for one task)
    key: jax.Array
    first_bad_update: jax.Array  # -1 while every loss has been finite
    relabel: Any = ()  # the trajectory relabeller's state (HFR's log-partition estimates)
    model: Any = ()  # the model component's state (MBPO's ensemble and model buffer)


@struct.dataclass
class EpisodeStarts:
    """Per seed, before choosing an action: does an episode start, is it a new task (the
    belief is cleared), and does it act with z from the prior."""

    now: jax.Array
    new_task: jax.Array
    prior: jax.Array

    @classmethod
    def none(cls, seeds: int) -> "EpisodeStarts":
        """No episode starts (steps in the middle of episodes)."""
        no = np.zeros(seeds, bool)
        return cls(now=no, new_task=no, prior=no)


_LAYER = re.compile(r"layer_(\d+)")


def reset_layers(old, new, last_k: int, num_layers: int):
    """Take the last ``last_k`` Dense layers (and their norms, optimiser moments and
    targets) from ``new``, the rest from ``old``; ``last_k == 0`` takes everything."""
    if last_k == 0:
        return new

    def pick(path, o, n):
        for entry in path:
            m = _LAYER.fullmatch(str(getattr(entry, "key", "")))
            if m:
                return n if int(m.group(1)) >= num_layers - last_k else o
        norm = next((str(e.key) for e in path if str(getattr(e, "key", "")).startswith("norm_")), None)
        if norm is not None:
            return n if int(norm.split("_")[1]) >= num_layers - last_k else o
        return o

    return jax.tree_util.tree_map_with_path(pick, old, new)


KEY_SHAPE = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a jax.random.PRNGKey


def _stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Learner:
    def __init__(self, agent: Agent, sampler: Sampler, *, capacity: int, replay_ratio: int,
                 batch_size: int | None = None, tasks=None, inference: Inference | None = None,
                 columns: dict | None = None, reset_layers: int = 0, reward_scale: float = 1.0,
                 relabel: Relabel | None = None, hindsight: Hindsight | None = None, model: NoModel | None = None):
        """``tasks`` (``replay.tasks.SingleTask`` or ``MultiTask``) says how batches are
        drawn, by default ``batch_size`` rows of one task; ``inference``, ``relabel`` and
        ``hindsight`` (HER) default to none; so does ``model`` (model rows completing each
        batch of ``batch_size``, of which the default ``tasks`` then draws the real rows)."""
        self.agent = agent
        self.sampler = sampler
        self.inference = inference if inference is not None else Inference(InferenceSpec(agent.obs_dim, agent.act_dim))
        self.capacity = capacity
        self.columns = {**(columns or {}), **self.inference.columns()}
        self.replay_ratio = replay_ratio
        self.reset_layers = reset_layers
        self.reward_scale = reward_scale
        self.relabeller = relabel if relabel is not None else Relabel()
        self.hindsight = hindsight if hindsight is not None else Hindsight()
        self.model = model if model is not None else NoModel()
        self.batch_size = batch_size
        self.tasks = tasks if tasks is not None else SingleTask(self.model.real_rows(batch_size))
        self.store = jax.jit(jax.vmap(self._store_one), donate_argnums=0)
        self.update = jax.jit(jax.vmap(self._update_one, in_axes=(0, 0, None, 0)), donate_argnums=0)
        self.act = jax.jit(jax.vmap(self._act_one, in_axes=(0, 0, 0, None)), static_argnums=3, donate_argnums=0)
        # evaluation: E episodes per seed at once, each with its own belief
        self.policy = jax.jit(jax.vmap(self._policy_one))
        self.eval_observe = jax.jit(jax.vmap(self._eval_observe_one))
        self.eval_begin = jax.jit(jax.vmap(self._eval_begin_one))
        # z statistics of (seeds, episodes) beliefs, for plots (only with inference: vmap needs arrays)
        self.eval_stats = jax.jit(jax.vmap(jax.vmap(self.inference.belief_stats)))
        self.refresh = jax.jit(self._refresh_seeds, donate_argnums=0)
        self.encoder_phase = jax.jit(self._encoder_phase_seeds, donate_argnums=0)
        self.relabel = jax.jit(self._relabel_seeds, donate_argnums=0)
        self.relabel_episode = jax.jit(jax.vmap(self._relabel_episode_one), donate_argnums=0)
        self.relabel_upkeep = jax.jit(jax.vmap(self._relabel_upkeep_one), donate_argnums=0)
        self.model_upkeep = jax.jit(self._model_upkeep_seeds, donate_argnums=0)
        self._init_single = jax.jit(self._init_one)
        self._stack_seeds = jax.jit(lambda *states: _stack(list(states)))
        self._agent_init = jax.jit(agent.init)
        self._split_keys = jax.jit(jax.vmap(self._split_key_one), donate_argnums=0)
        self._merge = jax.jit(jax.vmap(self._reset_merge_one), donate_argnums=0)

    # -- initial state ----------------------------------------------------------------
    # Networks are initialised one seed at a time and stacked (never under the seed vmap),
    # so a seed's initial parameters do not depend on how many seeds run together.
    def init(self, seeds: list[int]) -> SeedState:
        return self._stack_seeds(*[self._init_single(jax.random.PRNGKey(s)) for s in seeds])

    def compile_init(self, num_seeds: int) -> None:
        """Compile ``init`` for ``num_seeds`` seeds without allocating the state (``jax.jit``
        keeps the executables), so that a process's memory turn (``api.memory_reserved``)
        only allocates: cold compiles of a sweep's cells then overlap."""
        jax.random.PRNGKey(0)  # compiles init's eager seeding step too
        self._init_single.lower(KEY_SHAPE).compile()
        self._stack_seeds.lower(*[self._one_shape()] * num_seeds).compile()

    def _one_shape(self) -> SeedState:
        return jax.eval_shape(self._init_one, KEY_SHAPE)

    def init_shapes(self, num_seeds: int) -> SeedState:
        """Shapes and dtypes of the state without allocating it (checkpoint template)."""
        one = self._one_shape()
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((num_seeds,) + x.shape, x.dtype), one)

    def _init_one(self, key: jax.Array) -> SeedState:
        key, k_agent = jax.random.split(key)
        obs_dim = self.agent.obs_dim - self.inference.encoding_dim
        storage = replay_storage.init(self.capacity, obs_dim, self.agent.act_dim, self.columns)
        k_inference = jax.random.fold_in(k_agent, 1)  # the agent's key stays what it was before inference existed
        return SeedState(agent=self.agent.init(k_agent), inference=self.inference.init(k_inference),
                         belief=self.inference.belief_init(), storage=storage, sampler=self.sampler.init(storage),
                         tasks=self.tasks.init(self.capacity), key=key, first_bad_update=jnp.asarray(-1, jnp.int32),
                         relabel=self.relabeller.init(), model=self.model.init(jax.random.fold_in(k_agent, 2)))

    def reset(self, state: SeedState) -> SeedState:
        """Re-initialise networks and optimiser state with fresh keys; keep the replay."""
        state, keys = self._split_keys(state)
        fresh = _stack([self._agent_init(k) for k in keys])
        return self._merge(state, fresh)

    def _reset_merge_one(self, s: SeedState, fresh) -> SeedState:
        return s.replace(agent=reset_layers(s.agent, fresh, self.reset_layers, self.agent.num_layers))

    @staticmethod
    def _split_key_one(s: SeedState):
        key, k = jax.random.split(s.key)
        return s.replace(key=key), k

    # -- per-seed functions --------------------------------------------------------------
    def _store_one(self, s: SeedState, tr: Transition) -> SeedState:
        belief, row = self._observe_row(s.inference, s.belief, tr)
        return self._write_row(s, row).replace(belief=belief)

    def _observe_row(self, inference_state, before, tr: Transition):
        """The belief after ``tr``, and ``tr`` as it is stored (the encoder's columns added)."""
        after = self.inference.observe(inference_state, before, tr)
        return after, self.inference.annotate(inference_state, before, after, tr)

    def _write_row(self, s: SeedState, tr: Transition) -> SeedState:
        row = s.storage.ptr
        storage = replay_storage.add(s.storage, tr)
        return s.replace(storage=storage, sampler=self.sampler.on_add(s.sampler, storage, row),
                         tasks=self.tasks.on_add(s.tasks, storage, row))

    def _begin(self, s: SeedState, starts: EpisodeStarts) -> SeedState:
        """At an episode start, the belief's z for it (a new task clears the belief first)."""
        if not jax.tree.leaves(s.belief):  # no inference: nothing to begin, no key consumed
            return s
        key, k = jax.random.split(s.key)
        begun = self.inference.begin_episode(s.inference, s.belief, starts.new_task, starts.prior, k)
        belief = jax.tree.map(lambda b, o: jnp.where(starts.now, b, o), begun, s.belief)
        return s.replace(belief=belief, key=key)

    def _explore(self, s: SeedState, obs: jax.Array, random: bool):
        key, k = jax.random.split(s.key)
        if random:
            a = jax.random.uniform(k, (self.agent.act_dim,), jnp.float32, -1.0, 1.0)
        else:
            a = self.agent.explore(s.agent, self.inference.policy_obs(s.belief, obs)[None], k)[0]
        return s.replace(key=key), a

    def _act_one(self, s: SeedState, obs: jax.Array, starts: EpisodeStarts, random: bool):
        """The next action without updates: uniformly random (warm-up) or the policy's."""
        return self._explore(self._begin(s, starts), obs, random)

    def train(self, state: SeedState, tr: Transition, act_obs, step0, starts: EpisodeStarts | None = None):
        """One environment step of learning: store the transition, then ``replay_ratio``
        updates and the next action.

        Two compiled calls, not one: when the row is written in the same program that
        samples batches, XLA fuses the write into the batch gathers, which then need the
        old buffer, so it copies whole fields on every call (measured at 1M rows: two
        68 MB copies of next_obs, a 4x slower step). Apart, the write is in place and
        the updates only read.
        """
        starts = starts if starts is not None else EpisodeStarts.none(len(act_obs))
        return self.update(self.store(state, tr), act_obs, step0, starts)

    def _update_one(self, s: SeedState, act_obs: jax.Array, step0: jax.Array, starts: EpisodeStarts):
        storage, tasks = s.storage, s.tasks

        def one_update(carry, i):
            agent_state, inference_state, sampler_state, key, bad = carry
            key, k_sample, k_update = jax.random.split(key, 3)
            k_infer = jax.random.fold_in(k_sample, 1)  # unused (and compiled away) without inference
            batch, sampler_state = self.tasks.sample(tasks, storage, k_sample, self.sampler, sampler_state)
            batch = batch.replace(data=self.hindsight(batch.data, batch.rows, storage, jax.random.fold_in(k_sample, 2)))
            batch = self.model.mix(s.model, batch, jax.random.fold_in(k_sample, 3), self.batch_size)
            data, aux = self.inference.condition(inference_state, batch, k_infer)
            if self.reward_scale != 1.0:
                data = data.replace(reward=data.reward * self.reward_scale)
            step = step0 + i
            agent_state, metrics, td, obs_grad = self.agent.update(agent_state, data, batch.weights, k_update, step)
            inference_state, inference_metrics = self.inference.update(inference_state, aux, obs_grad)
            sampler_state = self.sampler.update(sampler_state, batch.rows, td[: batch.rows.shape[0]])  # real rows first
            metrics = {**metrics, **inference_metrics}
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
            bad = jnp.where((bad < 0) & ~finite, step, bad)
            return (agent_state, inference_state, sampler_state, key, bad), metrics

        carry = (s.agent, s.inference, s.sampler, s.key, s.first_bad_update)
        (agent_state, inference_state, sampler_state, key, bad), metrics = jax.lax.scan(
            one_update, carry, jnp.arange(self.replay_ratio, dtype=jnp.int32))
        s = s.replace(agent=agent_state, inference=inference_state, sampler=sampler_state, key=key,
                      first_bad_update=bad)
        s, action = self._act_one(s, act_obs, starts, False)
        return s, action, self._summarise(metrics)

    # -- evaluation: deterministic policy, one belief per evaluation episode ---------------
    def eval_beliefs(self, seeds: int, episodes: int):
        """Fresh beliefs for ``episodes`` evaluation episodes of each seed."""
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, episodes) + x.shape), self.inference.belief_init())

    def _policy_one(self, s: SeedState, beliefs, obs: jax.Array) -> jax.Array:
        return self.agent.act(s.agent, jax.vmap(self.inference.policy_obs)(beliefs, obs))

    def _eval_observe_one(self, s: SeedState, beliefs, tr: Transition, active: jax.Array):
        new = jax.vmap(self.inference.observe, in_axes=(None, 0, 0))(s.inference, beliefs, tr)
        return jax.tree.map(lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o),
                            new, beliefs)

    def _eval_begin_one(self, s: SeedState, beliefs, new_task: jax.Array, prior: jax.Array, keys: jax.Array):
        return jax.vmap(self.inference.begin_episode, in_axes=(None, 0, 0, 0, 0))(s.inference, beliefs, new_task,
                                                                                  prior, keys)

    def _summarise(self, metrics: dict) -> dict:
        """Mean over the replay-ratio updates; delayed (actor) metrics over actor updates only."""
        flag = metrics["actor_updated"]
        out = {}
        for name, v in metrics.items():
            if name == "actor_updated":
                continue
            if name in self.agent.delayed_metrics:
                out[name] = jnp.sum(v * flag) / jnp.maximum(jnp.sum(flag), 1.0)
            else:
                out[name] = jnp.mean(v)
        return out

    def _refresh_seeds(self, state: SeedState) -> SeedState:
        """Sampler upkeep (index rebuilds), one seed after the other with ``lax.map``, not
        ``vmap``: batched over seeds, the rebuild's dynamic slices turn into gathers and
        NMER's took 2.2x longer at 1M rows (23.0 s against 10.3 s for one seed)."""

        def one(args):
            sampler_state, storage, key = args
            key, k = jax.random.split(key)
            return self.sampler.refresh(sampler_state, storage, k), key

        sampler_state, key = jax.lax.map(one, (state.sampler, state.storage, state.key))
        return state.replace(sampler=sampler_state, key=key)

    # -- the inference method's upkeep (CEMRL's encoder phase and relabelling), seed by seed
    def _encoder_phase_seeds(self, state: SeedState):
        def one(args):
            inference_state, storage, key = args
            key, k = jax.random.split(key)
            inference_state, metrics = self.inference.encoder_phase(inference_state, storage, k)
            return inference_state, key, metrics

        inference_state, key, metrics = jax.lax.map(one, (state.inference, state.storage, state.key))
        return state.replace(inference=inference_state, key=key), metrics

    def _relabel_seeds(self, state: SeedState):
        storage, belief = jax.lax.map(lambda args: self.inference.relabel(*args),
                                      (state.inference, state.storage, state.belief))
        return state.replace(storage=storage, belief=belief)

    # -- trajectory relabelling: the relabeller's jobs, with this learner's components -----
    def _replay_episode(self, inference_state, traj: Transition, key: jax.Array):
        """The rows ``traj`` would have been stored as (encoder columns included) and the
        belief after it, had the acting policy seen exactly these transitions."""
        inf = self.inference
        begun = inf.begin_episode(inference_state, inf.belief_init(), jnp.asarray(True), jnp.asarray(True), key)
        final, rows = jax.lax.scan(functools.partial(self._observe_row, inference_state), begun, traj)
        return rows, final

    def _relabel_context(self, s: SeedState) -> RelabelContext:
        return RelabelContext(
            replay=functools.partial(self._replay_episode, s.inference), policy_obs=self.inference.policy_obs,
            value=functools.partial(self.agent.value, s.agent),
            encoding_after=functools.partial(self.inference.encoding_after, s.inference, s.storage),
            has_data=self.tasks.task_rows(s.tasks, s.storage.capacity) > 0)

    def _relabel_episode_one(self, s: SeedState) -> SeedState:
        key, k = jax.random.split(s.key)
        rows, relabel = self.relabeller.episode(s.relabel, s.storage, s.tasks, k, self._relabel_context(s))
        s = jax.lax.scan(lambda st, tr: (self._write_row(st, tr), None), s, rows)[0]
        return s.replace(key=key, relabel=relabel)

    def _relabel_upkeep_one(self, s: SeedState):
        key, k = jax.random.split(s.key)
        relabel, metrics = self.relabeller.upkeep(s.relabel, s.storage, s.tasks, k, self._relabel_context(s))
        return s.replace(key=key, relabel=relabel), metrics

    # -- the model component's upkeep (MBPO's fit and rollouts), seed by seed ----------------
    def _model_upkeep_seeds(self, state: SeedState, length: jax.Array):
        """Fit and roll out seed after seed: one seed's model-training arrays and rollout
        batch are alive at a time. The stacked model states are the scan's (donated) carry:
        each step slices one seed's state out and writes it back, so one seed's model buffer
        is copied at a time (returned by ``lax.map``, every seed's buffer would be a new copy)."""

        def one(models, args):
            i, agent_state, storage, key = args
            key, k = jax.random.split(key)
            policy = functools.partial(self.agent.explore, agent_state)
            new, metrics = self.model.upkeep(jax.tree.map(lambda x: x[i], models), storage, k, length, policy)
            return jax.tree.map(lambda all_, x: all_.at[i].set(x), models, new), (key, metrics)

        seeds = jnp.arange(state.key.shape[0])
        model, (key, metrics) = jax.lax.scan(one, state.model, (seeds, state.agent, state.storage, state.key))
        return state.replace(model=model, key=key), metrics
