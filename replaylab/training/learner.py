"""The compiled side of training: everything that touches parameters and replay.

Each function is written for one seed and then ``vmap``-ed over the seed axis, so S seeds
in one process compute exactly what S separate runs with those seeds compute. Per
environment step the loop makes two compiled calls (see ``Learner.train`` for why two):

    store(state, transition)                    write the row in place, sampler upkeep
    update(state, next_obs_to_act_on, step)     ``replay_ratio`` x (sample, update, sampler
                                                feedback) in a ``lax.scan``, then the
                                                exploration action for the next step

The state is donated, so the replay storage is updated in place and never copied.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.agents import Agent
from replaylab.replay import storage as replay_storage
from replaylab.replay.sampler import Sampler
from replaylab.replay.storage import Storage, Transition


@struct.dataclass
class SeedState:
    """Everything one seed's learner owns; the training state stacks these along axis 0."""

    agent: Any
    storage: Storage
    sampler: Any
    key: jax.Array
    first_bad_update: jax.Array  # -1 while every loss has been finite


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


def _stack(trees: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class Learner:
    def __init__(self, agent: Agent, sampler: Sampler, *, capacity: int, batch_size: int,
                 replay_ratio: int, reset_layers: int = 0):
        self.agent = agent
        self.sampler = sampler
        self.capacity = capacity
        self.batch_size = batch_size
        self.replay_ratio = replay_ratio
        self.reset_layers = reset_layers
        seeds = partial(jax.vmap, in_axes=(0, 0, 0))
        self.collect = jax.jit(seeds(self._collect_one), donate_argnums=0)
        self.store = jax.jit(jax.vmap(self._store_one), donate_argnums=0)
        self.update = jax.jit(jax.vmap(self._update_one, in_axes=(0, 0, None)), donate_argnums=0)
        self.first_action = jax.jit(jax.vmap(self._first_action_one, in_axes=(0, 0, None)),
                                    static_argnums=2, donate_argnums=0)
        self.act = jax.jit(jax.vmap(lambda s, obs: agent.act(s.agent, obs)))
        self.refresh = jax.jit(self._refresh_seeds, donate_argnums=0)
        self._init_single = jax.jit(self._init_one)
        self._agent_init = jax.jit(agent.init)
        self._split_keys = jax.jit(jax.vmap(self._split_key_one), donate_argnums=0)
        self._merge = jax.jit(jax.vmap(self._reset_merge_one), donate_argnums=0)

    # -- initial state ----------------------------------------------------------------
    # Networks are initialised one seed at a time and stacked (never under the seed vmap),
    # so a seed's initial parameters do not depend on how many seeds run together.
    def init(self, seeds: list[int]) -> SeedState:
        return _stack([self._init_single(jax.random.PRNGKey(s)) for s in seeds])

    def init_shapes(self, num_seeds: int) -> SeedState:
        """Shapes and dtypes of the state without allocating it (checkpoint template)."""
        one = jax.eval_shape(self._init_one, jax.ShapeDtypeStruct((2,), jnp.uint32))
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((num_seeds,) + x.shape, x.dtype), one)

    def _init_one(self, key: jax.Array) -> SeedState:
        key, k_agent = jax.random.split(key)
        storage = replay_storage.init(self.capacity, self.agent.obs_dim, self.agent.act_dim)
        return SeedState(agent=self.agent.init(k_agent), storage=storage, sampler=self.sampler.init(storage),
                         key=key, first_bad_update=jnp.asarray(-1, jnp.int32))

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
    def _add(self, s: SeedState, tr: Transition) -> tuple[Storage, Any]:
        row = s.storage.ptr
        storage = replay_storage.add(s.storage, tr)
        return storage, self.sampler.on_add(s.sampler, storage, row)

    def _random_action(self, key: jax.Array) -> jax.Array:
        return jax.random.uniform(key, (self.agent.act_dim,), jnp.float32, -1.0, 1.0)

    def _first_action_one(self, s: SeedState, obs: jax.Array, random: bool):
        key, k = jax.random.split(s.key)
        a = self._random_action(k) if random else self.agent.explore(s.agent, obs[None], k)[0]
        return s.replace(key=key), a

    def _collect_one(self, s: SeedState, tr: Transition, act_obs: jax.Array):
        """Warm-up: store the transition and pick a uniformly random next action."""
        storage, sampler_state = self._add(s, tr)
        key, k = jax.random.split(s.key)
        return s.replace(storage=storage, sampler=sampler_state, key=key), self._random_action(k)

    def train(self, state: SeedState, tr: Transition, act_obs, step0):
        """One environment step of learning: store the transition, then ``replay_ratio``
        updates and the next action.

        Two compiled calls, not one: when the row is written in the same program that
        samples batches, XLA fuses the write into the batch gathers, which then need the
        old buffer, so it copies whole fields on every call (measured at 1M rows: two
        68 MB copies of next_obs, a 4x slower step). Apart, the write is in place and
        the updates only read.
        """
        return self.update(self.store(state, tr), act_obs, step0)

    def _store_one(self, s: SeedState, tr: Transition) -> SeedState:
        storage, sampler_state = self._add(s, tr)
        return s.replace(storage=storage, sampler=sampler_state)

    def _update_one(self, s: SeedState, act_obs: jax.Array, step0: jax.Array):
        storage, sampler_state = s.storage, s.sampler

        def one_update(carry, i):
            agent_state, sampler_state, key, bad = carry
            key, k_sample, k_update = jax.random.split(key, 3)
            batch, weights, rows, sampler_state = self.sampler.sample(sampler_state, storage, k_sample,
                                                                      self.batch_size)
            step = step0 + i
            agent_state, metrics, td = self.agent.update(agent_state, batch, weights, k_update, step)
            sampler_state = self.sampler.update(sampler_state, rows, td)
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
            bad = jnp.where((bad < 0) & ~finite, step, bad)
            return (agent_state, sampler_state, key, bad), metrics

        carry = (s.agent, sampler_state, s.key, s.first_bad_update)
        (agent_state, sampler_state, key, bad), metrics = jax.lax.scan(
            one_update, carry, jnp.arange(self.replay_ratio, dtype=jnp.int32))
        key, k_act = jax.random.split(key)
        action = self.agent.explore(agent_state, act_obs[None], k_act)[0]
        new = SeedState(agent=agent_state, storage=storage, sampler=sampler_state, key=key, first_bad_update=bad)
        return new, action, self._summarise(metrics)

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
