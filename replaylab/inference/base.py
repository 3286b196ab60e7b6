"""The interface between a task-inference method and the one learner, and ``none``.

An inference method turns experience of a task into a latent z and conditions the agent
on it: the agent acts and learns on (s, z), with z appended to the observations, so SAC,
TD3 and DDPG all work with every method unchanged. Its pure functions, vmapped over seeds
inside the compiled learner like everything else:

- ``init(key)``: its trainable state (an encoder and its optimiser).
- ``condition(state, batch, key) -> (transitions, aux)``: the batch the agent learns on,
  (s, z) and (s', z); ``aux`` carries what ``update`` needs.
- ``update(state, aux, obs_grad) -> (state, metrics)``: its own gradient step, after the
  agent's; ``obs_grad`` is the critic loss' gradient w.r.t. the conditioned observations
  (requested from the agent when ``needs_obs_grad``).
- acting: a belief carried between environment steps in the compiled state and in
  checkpoints: ``belief_init()``, ``observe(state, belief, transition)`` after every step,
  ``begin_episode(state, belief, new_task, prior, key)`` when an episode starts (a new task
  clears it), and ``policy_obs(belief, obs)``, the observation the policy sees.

``context`` names the context source it reads from replay (``recent`` or ``window``, see
``replay/tasks.py``); ``latent_dim`` is the width of z, ``encoding_dim`` the width of what
the policy appends to s.

Methods that train their encoder apart from the RL losses (CEMRL) also use:

- ``columns()``: extra storage columns, filled when a transition is stored by
  ``annotate(state, belief_before, belief_after, transition)``;
- two upkeep jobs that the loop runs every ``phase_every`` environment steps (and once
  before the first update), between environment steps, like the sampler's refresh:
  ``encoder_phase(state, storage, key) -> (state, metrics)`` and
  ``relabel(state, storage, belief) -> (storage, belief)`` (the acting belief is
  re-encoded too, so what ``annotate`` stores next is the new encoder's).

``meta_defaults`` overrides the episode schedule's defaults (no exploration episodes for
online adaptation); with ``split_batch`` a batch is ``batch_size`` rows in all, spread
over ``meta_batch`` tasks, instead of ``batch_size`` rows per task (PEARL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from replaylab.params import declared


@dataclass(frozen=True)
class InferenceSpec:
    """What a method needs to know about the run (not user parameters)."""

    obs_dim: int
    act_dim: int
    task_params: tuple[tuple[float, ...], ...] = ()  # every task's parameters, train tasks first
    num_train_tasks: int = 0

    @classmethod
    def of(cls, env) -> "InferenceSpec":
        """The spec of an env: its sizes, and its task set where it has one."""
        if env.tasks is None:
            return cls(env.obs_dim, env.act_dim)
        return cls(env.obs_dim, env.act_dim, tuple(map(tuple, env.tasks.params.tolist())), env.tasks.num_train)


def append_z(obs: jax.Array, z: jax.Array) -> jax.Array:
    """The policy's input: ``obs`` (..., dim) with the belief's ``z`` appended to every row."""
    return jnp.concatenate([obs, jnp.broadcast_to(z, obs.shape[:-1] + z.shape)], -1)


@dataclass(frozen=True)
class Inference:
    """No inference: z is empty and the agent sees s alone (a multi-task agent on a
    task distribution; the plain agent on a single task)."""

    spec: InferenceSpec

    context: ClassVar[str] = "none"
    needs_obs_grad: ClassVar[bool] = False
    metric_names: ClassVar[tuple[str, ...]] = ()
    latent_dim: ClassVar[int] = 0  # a method sets these as parameters
    context_size: ClassVar[int] = 0
    meta_defaults: ClassVar[dict] = {}
    split_batch: ClassVar[bool] = False
    phase_metric_names: ClassVar[tuple[str, ...]] = ()
    # the belief after observing a trajectory encodes it (trajectory relabelling needs this)
    encodes_trajectories: ClassVar[bool] = True

    @property
    def encoding_dim(self) -> int:
        return self.latent_dim

    @property
    def phase_every(self) -> int:
        """Environment steps between encoder phases; 0: the method has none."""
        return 0

    @classmethod
    def params(cls) -> dict:
        return declared(cls)

    def init(self, key: jax.Array):
        return ()

    def condition(self, state, batch, key: jax.Array):
        return batch.data, ()

    def update(self, state, aux, obs_grad):
        return state, {}

    def belief_init(self):
        return ()

    def observe(self, state, belief, tr):
        return belief

    def begin_episode(self, state, belief, new_task: jax.Array, prior: jax.Array, key: jax.Array):
        return belief

    def policy_obs(self, belief, obs: jax.Array) -> jax.Array:
        return obs

    def belief_stats(self, belief) -> dict:
        return {}

    def columns(self) -> dict:
        return {}

    def encoding_after(self, state, storage, rows: jax.Array, key: jax.Array) -> jax.Array:
        """(n, encoding_dim): what the policy appends to s after stored ``rows`` (HFR's
        log-partition estimate pairs start states with their episode's z)."""
        return jnp.zeros((rows.shape[0], self.encoding_dim), jnp.float32)

    def annotate(self, state, before, after, tr):
        return tr

    def encoder_phase(self, state, storage, key: jax.Array):
        return state, {}

    def relabel(self, state, storage, belief):
        return storage, belief
