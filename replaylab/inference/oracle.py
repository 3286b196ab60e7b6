"""``inference=oracle``: z is the task's true parameters, the upper bound for task inference.

Not a method but a yardstick (the "oracle" rows of meta-RL papers): the agent acts and
learns on (s, z) with z the active task's parameter vector (goal, velocity, ...),
standardised with the train tasks' mean and standard deviation. It shows what the RL part
achieves with perfect inference at a budget, so a method's gap to it is the cost of
inferring the task, and its gap to ``inference=none`` is the worth of knowing it.

It learns nothing of its own. Like the online methods it knows the task from the
episode's first transition on (the stored ``task`` of each step), and after a mid-episode
switch it too is one step late. z ends with a flag, 1 once the task is known: at an
episode's first step z is all zeros, in acting and in learning (without the flag that
would be the z of a task at the train tasks' mean, and the first steps' rewards of every
task would be learned as that task's: on toy2d at 16k steps, IQM -90.0 against -63.3 with
it). ``relabel=hfr`` is refused: its choice of task reads the trajectory's encoding, and
the oracle's is the task itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from replaylab.inference.base import Inference, append_z
from replaylab.inference.window import WindowInference
from replaylab.replay.storage import Transition


@struct.dataclass
class TaskBelief:
    z: jax.Array  # (P,) the standardised parameters of the task seen last in this episode


@dataclass(frozen=True)
class Oracle(Inference):
    meta_defaults: ClassVar[dict] = WindowInference.meta_defaults  # act online, as SMRL and CEMRL do
    split_batch: ClassVar[bool] = True
    encodes_trajectories: ClassVar[bool] = False

    @property
    def latent_dim(self) -> int:
        return len(self.spec.task_params[0]) + 1 if self.spec.task_params else 0

    @cached_property
    def table(self) -> np.ndarray:
        """(tasks, P + 1): every task's parameters, standardised over the train tasks, and 1."""
        params = np.asarray(self.spec.task_params, np.float32)
        train = params[: self.spec.num_train_tasks]
        std = train.std(0)
        z = (params - train.mean(0)) / np.where(std > 1e-6, std, 1.0)  # a constant parameter stays 0
        return np.concatenate([z, np.ones((len(z), 1), np.float32)], 1)

    def z_of(self, task: jax.Array) -> jax.Array:
        return jnp.asarray(self.table)[task]

    def condition(self, state, batch, key: jax.Array):
        d = batch.data
        z = self.z_of(d.extra["task"])
        seen = jnp.where((d.step == 0)[:, None], 0.0, z)  # the first step acted on "unknown"
        return d.replace(obs=jnp.concatenate([d.obs, seen], -1), next_obs=jnp.concatenate([d.next_obs, z], -1)), ()

    def encoding_after(self, state, storage, rows: jax.Array, key: jax.Array) -> jax.Array:
        return self.z_of(storage.data.extra["task"][rows])

    def belief_init(self) -> TaskBelief:
        return TaskBelief(z=jnp.zeros((self.latent_dim,), jnp.float32))

    def observe(self, state, b: TaskBelief, tr: Transition) -> TaskBelief:
        return TaskBelief(z=self.z_of(tr.extra["task"]))

    def begin_episode(self, state, b: TaskBelief, new_task, prior, key) -> TaskBelief:
        return self.belief_init()

    def policy_obs(self, b: TaskBelief, obs: jax.Array) -> jax.Array:
        return append_z(obs, b.z)

    def belief_stats(self, b: TaskBelief) -> dict:
        return {"mean": b.z[:-1], "var": jnp.zeros_like(b.z[:-1])}
