"""Model-based policy optimisation (Janner et al., NeurIPS 2019): ``model=mbpo``.

Every ``train_every`` environment steps (and just before the first update):

1. fit the dynamics ensemble (``dynamics.py``: ``ensemble`` members, ``elites`` kept) on
   every real row: (s, a) -> (r, s' - s), Gaussian NLL, held-out early stopping;
2. draw ``rollout_batch`` start states uniformly from the real replay and roll the
   model out for k steps with the agent's current exploration policy; at each step every
   live row takes a Gaussian draw from one elite, the env's termination rule marks its
   predicted s', the transition is stored in the model buffer and a terminal row stops;
3. k grows linearly from ``min_length`` to ``max_length`` between epochs ``min_epoch``
   and ``max_epoch``, MBPO's schedule (an epoch is 1000 environment steps, counted from
   the end of the warm-up, as MBPO counts from the end of its initial exploration).

Every gradient update draws ``real_ratio`` of its batch from the real replay (through the
replay method, so ``replay=per model=mbpo`` composes) and the rest uniformly from the
model rows of the last ``retain_epochs`` epochs' rollouts. The replay ratio is the run's
``replay_ratio`` (MBPO used 20 on Hopper).

Choices, where the originals differ or are unclear:

- The model buffer is one preallocated ring of ``buffer_rows`` rows (by default MBPO's
  formula at the longest rollout: retain_epochs x max_length x rollout_batch x
  1000 / train_every); batches read only its newest rows, as many as the last
  ``retain_epochs`` epochs of rollouts at the current length produce, which is what
  MBPO's reallocated buffer holds. LCER's ``resize_v_memory`` refilled the model buffer
  with real transitions after each fit (``nmer_lcer.md`` 2.10); we don't copy that.
- A batch has ``round(real_ratio x batch_size)`` real rows, at least 1 (MBPO truncates:
  12 of 256 where we take 13). A rollout row whose prediction is not finite is dropped
  and stopped.
- Rows are dealt to the elites in turn from a random offset at every model step
  (``Ensemble.sample``): each elite computes only its share, and each row meets a random
  elite per step, as MBPO's random member per row and step.
- A fit that runs long is cut at ``max_epochs`` (0: never), for CPU budgets.
- Only single-task envs with a known termination rule (``envs/termination.py``) and no
  goal: the model predicts the observation, not an achieved goal or a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.models.base import ModelSpec, NoModel
from replaylab.models.dynamics import Ensemble, EnsembleState
from replaylab.params import opt
from replaylab.replay import storage as replay_storage
from replaylab.replay.storage import Storage, Transition, gather

EPOCH_STEPS = 1000  # environment steps per MBPO epoch (the rollout-length schedule's unit)


@struct.dataclass
class MBPOState:
    ensemble: EnsembleState
    buffer: Storage  # model rows; episode -1
    window: jax.Array  # () newest model rows batches draw from


@dataclass(frozen=True)
class MBPO(NoModel):
    """Model rollouts from a probabilistic ensemble, mixed into every batch."""

    spec: ModelSpec = None
    ensemble: int = opt(7, "dynamics models in the ensemble", min=1)
    elites: int = opt(5, "best models on the holdout used for rollouts", min=1)
    hidden: int = opt(200, "units per hidden layer of a model", min=1)
    layers: int = opt(4, "hidden layers per model (Swish)", min=1)
    lr: float = opt(1e-3, "Adam learning rate of the models", min=0.0)
    model_batch: int = opt(256, "minibatch size of model training", min=1)
    holdout: float = opt(0.2, "share of the real rows held out for early stopping", min=0.01, max=0.9)
    max_holdout: int = opt(5000, "at most this many held-out rows", min=1)
    patience: int = opt(5, "stop a fit after this many epochs without a 1% holdout gain", min=1)
    max_epochs: int = opt(0, "cut a fit after this many epochs (0: no cut)", min=0)
    train_every: int = opt(250, "env steps between model fits (each followed by rollouts)", min=1)
    rollout_batch: int = opt(100_000, "start states per rollout", min=1)
    min_length: int = opt(1, "rollout length up to min_epoch", min=1)
    max_length: int = opt(15, "rollout length from max_epoch on", min=1)
    min_epoch: int = opt(20, "epoch (1000 env steps) where the rollout length starts to grow", min=0)
    max_epoch: int = opt(150, "epoch where the rollout length reaches max_length", min=0)
    retain_epochs: int = opt(1, "epochs of rollouts batches draw from", min=1)
    real_ratio: float = opt(0.05, "share of each batch drawn from the real replay (at least 1 row)",
                            min=0.0, max=1.0)
    buffer_rows: int = opt(0, "model buffer capacity (0: retain_epochs x max_length x rollout_batch x "
                              "1000 / train_every)", min=0)

    metric_names: ClassVar[tuple[str, ...]] = ("model_holdout_mse", "model_epochs", "rollout_length",
                                               "model_rows")

    @property
    def upkeep_every(self) -> int:
        return self.train_every

    @property
    def models(self) -> Ensemble:
        s = self.spec
        return Ensemble(in_dim=s.obs_dim + s.act_dim, out_dim=1 + s.obs_dim, members=self.ensemble,
                        elites=self.elites, hidden=self.hidden, layers=self.layers, lr=self.lr, batch=self.model_batch,
                        holdout=self.holdout, max_holdout=self.max_holdout, patience=self.patience,
                        max_epochs=self.max_epochs)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, EPOCH_STEPS // self.train_every)

    @property
    def capacity(self) -> int:
        return self.buffer_rows or self.retain_epochs * self.max_length * self.rollout_batch * self.batches_per_epoch

    def real_rows(self, batch_size: int) -> int:
        return max(1, round(self.real_ratio * batch_size))

    def rollout_length(self, steps: int) -> int:
        """MBPO's schedule after ``steps`` environment steps of learning: linear in the
        epoch between (min_epoch, min_length) and (max_epoch, max_length), constant outside."""
        epoch = steps / EPOCH_STEPS
        span = max(self.max_epoch - self.min_epoch, 1)
        k = self.min_length + (epoch - self.min_epoch) / span * (self.max_length - self.min_length)
        return int(min(max(k, self.min_length), self.max_length))

    def init(self, key):
        s = self.spec
        return MBPOState(ensemble=self.models.init(key),
                         buffer=replay_storage.init(self.capacity, s.obs_dim, s.act_dim),
                         window=jnp.zeros((), jnp.int32))

    # -- the job: fit, then roll out ----------------------------------------------------------
    def upkeep(self, state: MBPOState, storage: Storage, key, length, policy):
        k_fit, k_start, k_roll = jax.random.split(key, 3)
        ensemble = self.models.fit(state.ensemble, *training_data(storage), storage.size, k_fit)
        starts = replay_storage.uniform_indices(storage, k_start, self.rollout_batch)
        buffer, written = self.rollout(ensemble, state.buffer, storage.data.obs[starts], length, k_roll, policy)
        per_step = self.retain_epochs * self.batches_per_epoch * self.rollout_batch  # rows per unit of length
        window = jnp.minimum(buffer.size.astype(jnp.float32), per_step * jnp.asarray(length, jnp.float32))
        metrics = dict(model_holdout_mse=jnp.mean(ensemble.holdout_mse[ensemble.elites]),
                       model_epochs=ensemble.epochs, rollout_length=length, model_rows=written)
        return MBPOState(ensemble=ensemble, buffer=buffer, window=window.astype(jnp.int32)), metrics

    def rollout(self, ensemble: EnsembleState, buffer: Storage, obs, length, key, policy):
        """``length`` model steps from ``obs`` (B, D) with ``policy``; every live row's
        transition is appended to ``buffer``; a row stops once its s' is terminal."""
        terminal = self.spec.termination
        models = self.models

        def step(t, carry):
            buffer, obs, alive, written = carry
            k_act, k_model = jax.random.split(jax.random.fold_in(key, t))
            action = policy(obs, k_act)
            delta = models.sample(ensemble, jnp.concatenate([obs, action], -1), k_model)
            next_obs = obs + delta[:, 1:]
            done = terminal(next_obs)
            keep = alive & jnp.all(jnp.isfinite(delta), -1)  # a diverged prediction is neither stored nor continued
            tr = Transition(obs=obs, action=action, reward=delta[:, 0], next_obs=next_obs, terminated=done,
                            episode=jnp.full(done.shape, -1, jnp.int32), step=jnp.zeros(done.shape, jnp.int32))
            buffer = replay_storage.add_where(buffer, tr, keep)
            return buffer, next_obs, keep & ~done, written + jnp.sum(keep)

        alive = jnp.ones(obs.shape[:1], bool)
        buffer, _, _, written = jax.lax.fori_loop(0, length, step, (buffer, obs, alive, jnp.zeros((), jnp.int32)))
        return buffer, written

    # -- batches ------------------------------------------------------------------------------
    def mix(self, state: MBPOState, batch, key, batch_size: int):
        """``batch``'s real rows completed to ``batch_size`` with the newest model rows."""
        n = batch_size - batch.weights.shape[0]
        buf = state.buffer
        back = jax.random.randint(key, (n,), 0, jnp.maximum(state.window, 1))
        model = gather(buf, (buf.ptr - 1 - back) % buf.capacity)
        data = jax.tree.map(lambda real, m: jnp.concatenate([real, m]), batch.data, model)
        return batch.replace(data=data, weights=jnp.concatenate([batch.weights, jnp.ones((n,), batch.weights.dtype)]))


def training_data(storage: Storage) -> tuple[jax.Array, jax.Array]:
    """Every row as a model input (s, a) and target (r, s' - s)."""
    d = storage.data
    return jnp.concatenate([d.obs, d.action], -1), jnp.concatenate([d.reward[:, None], d.next_obs - d.obs], -1)
