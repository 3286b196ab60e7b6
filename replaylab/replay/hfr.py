"""Hindsight-foresight relabelling (HFR; Wan, Peng & Gangwani, ICLR 2022), as DMRLAD's
"augmented data": every training trajectory is stored a second time, relabelled for
the train task it is most informative about.

For a trajectory tau of L transitions, once it is stored:

1. for every train task j: r^j = the env's reward_fn(tau, g_j) (and terminations), and
   z_j = the encoding of tau with rewards r^j, i.e. the belief after all L transitions,
   computed as the acting policy would have (``Inference.observe``) with the current
   encoder;
2. the foresight utility U_j = mean_b V(s0_b, z_j) over ``utility_batch`` start states of
   task j drawn from replay, V the agent's value of its policy (``Agent.value``: min_i Q_i;
   DSAC: the risk measure of its quantiles);
3. p(j | tau) = softmax_j(U_j - log Z_j) over the tasks with data; j ~ p (or the argmax);
4. tau is stored again with r^j, the terminations for g_j, task j, a fresh episode id and
   the encoder columns it would have had under task j.

log Z_j, task j's log-partition estimate, is the log-mean-exp over ``log_z_draws`` draws
of mean_b V(s0_b, z_b) with B stored episodes of task j: their start states and the
encoding after the episode (its last row's window). It is refreshed every
``log_z_every`` environment steps (zeros before the first refresh, as DMRLAD).

Deviations from DMRLAD (``rollout_worker.py::relabel_dhfr``), on purpose:
- the encoding of a relabelled trajectory includes its last transition (DMRLAD's
  context dropped it);
- the copy is stored as task j (DMRLAD kept the original task's metadata, which mixed
  relabelled rewards into the original task's encoding statistics);
- log Z_j pairs each start state with the z of its own episode, the z the utility of a
  relabelled trajectory uses too (DMRLAD used the stored z of the start transition,
  which, encoded from an empty window, is the same for every task).

Trajectories end at the same step for every seed only if episodes have a fixed length, so
``relabel=hfr`` needs a family that never terminates early (the config check says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from replaylab.params import opt
from replaylab.replay.relabel import Relabel, RelabelContext
from replaylab.replay.storage import Storage, Transition, gather, holds_step
from replaylab.replay.tasks import TaskIndexState, TaskPool


@struct.dataclass
class HFRState:
    log_z: jax.Array  # (T,) log-partition estimate per train task
    copies: jax.Array  # () trajectories relabelled so far
    same: jax.Array  # () of them relabelled to the task they were collected on


@dataclass(frozen=True)
class HFR(Relabel):
    utility_batch: int = opt(16, "start states per task in a utility estimate (DMRLAD's utility_batch_size)",
                             min=1)
    log_z_draws: int = opt(20, "draws per task in its log-partition estimate (log-mean-exp)", min=1)
    log_z_every: int = opt(4000, "environment steps between log-partition refreshes", min=1)
    softmax: bool = opt(True, "sample the task from softmax(U - log Z); false: take the argmax")

    relabels_episodes: ClassVar[bool] = True
    metric_names: ClassVar[tuple[str, ...]] = ("hfr_copies", "hfr_same_task", "hfr_log_z")

    @property
    def upkeep_every(self) -> int:
        return self.log_z_every

    @property
    def num_tasks(self) -> int:
        return len(self.spec.train_params)

    def init(self) -> HFRState:
        zero = jnp.zeros((), jnp.int32)
        return HFRState(log_z=jnp.zeros((self.num_tasks,), jnp.float32), copies=zero, same=zero)

    # -- the algorithm ------------------------------------------------------------------------
    def episode(self, s: HFRState, storage: Storage, index: TaskIndexState, key: jax.Array,
                ctx: RelabelContext) -> tuple[Transition, HFRState]:
        """The relabelled copy of the episode that just ended (the last L stored rows)."""
        k_enc, k_starts, k_value, k_choose = jax.random.split(key, 4)
        T, B = self.num_tasks, self.utility_batch
        traj = self.last_trajectory(storage)
        # 1. rewards for every train task; the copy's rows and its z, as if collected so
        rows, final = jax.vmap(ctx.replay, in_axes=(0, None))(self.candidates(traj), k_enc)
        # 2. foresight utility at each task's start states, conditioned on that z
        starts, _ = self.episode_rows(index, storage, k_starts, jnp.arange(T), B)
        obs = jax.vmap(ctx.policy_obs)(final, storage.data.obs[starts])  # (T, B, obs + z)
        utility = ctx.value(obs.reshape(T * B, -1), k_value).reshape(T, B).mean(1)
        # 3. j ~ softmax(U - log Z)
        task = self.choose(k_choose, utility, s.log_z, ctx.has_data)
        # 4. the copy, as an episode of task j with a fresh id -(e + 1)
        copy = jax.tree.map(lambda x: x[task], rows)
        copy = copy.replace(episode=jnp.full_like(copy.episode, -1) - traj.episode[0])
        same = (task == traj.extra["task"][0]).astype(jnp.int32)
        return copy, s.replace(copies=s.copies + 1, same=s.same + same)

    def upkeep(self, s: HFRState, storage: Storage, index: TaskIndexState, key: jax.Array,
               ctx: RelabelContext) -> tuple[HFRState, dict]:
        """log Z_j: log-mean-exp over draws of mean_b V(s0_b, z_b), stored episodes of task j."""
        k_rows, k_enc, k_value = jax.random.split(key, 3)
        T, R, B = self.num_tasks, self.log_z_draws, self.utility_batch
        starts, ends = self.episode_rows(index, storage, k_rows, jnp.repeat(jnp.arange(T), R), B)
        obs = jnp.concatenate([storage.data.obs[starts.reshape(-1)], ctx.encoding_after(ends.reshape(-1), k_enc)],
                              -1)
        value = ctx.value(obs, k_value).reshape(T, R, B).mean(-1)
        s = s.replace(log_z=jnp.where(ctx.has_data, self.log_mean_exp(value), 0.0))
        return s, self.metrics(s)

    # -- 1. the trajectory relabelled for every train task ---------------------------------
    def last_trajectory(self, storage: Storage) -> Transition:
        """The last ``episode_length`` stored rows, oldest first."""
        L = self.spec.episode_length
        rows = (storage.ptr - L + jnp.arange(L)) % storage.capacity
        return gather(storage, rows)

    def candidates(self, traj: Transition) -> Transition:
        """(T, L, ...): ``traj`` with the rewards, terminations and task of each train task."""
        params = jnp.asarray(self.spec.train_params)
        T, L = params.shape[0], traj.reward.shape[0]
        reward, terminated = self.spec.reward_fn(jnp, traj.obs[None], traj.action[None], traj.next_obs[None],
                                                 traj.extra["info"][None], params[:, None, :])
        out = jax.tree.map(lambda x: jnp.broadcast_to(x, (T,) + x.shape), traj)
        task = jnp.broadcast_to(jnp.arange(T, dtype=traj.extra["task"].dtype)[:, None], (T, L))
        return out.replace(reward=jnp.broadcast_to(reward, (T, L)).astype(traj.reward.dtype),
                           terminated=jnp.broadcast_to(terminated, (T, L)).astype(bool),
                           extra={**out.extra, "task": task})

    # -- 2. start states (and episode ends) of each task from replay -------------------------
    def episode_rows(self, index: TaskIndexState, storage: Storage, key: jax.Array, tasks: jax.Array, n: int):
        """(tasks, n) start rows of stored episodes of each task, and the episodes' last
        stored rows; where an episode's start was overwritten, the drawn row itself."""
        rows = TaskPool(index, storage, tasks, n).draw(key).reshape(tasks.shape[0], n)
        start, found = holds_step(storage, rows, -storage.data.step[rows])
        start = jnp.where(found, start, rows)
        end, ok = holds_step(storage, start, self.spec.episode_length - 1)
        ok &= (storage.ptr - 1 - end) % storage.capacity < storage.size  # written, not a stale row
        return start, jnp.where(ok, end, rows)

    # -- 3. the choice -----------------------------------------------------------------------
    def choose(self, key: jax.Array, utility: jax.Array, log_z: jax.Array, available: jax.Array) -> jax.Array:
        logits = jnp.where(available, utility - log_z, -jnp.inf)
        if self.softmax:
            return jax.random.categorical(key, logits)
        return jnp.argmax(logits)

    @staticmethod
    def log_mean_exp(values: jax.Array, axis: int = -1) -> jax.Array:
        return jax.scipy.special.logsumexp(values, axis=axis) - jnp.log(values.shape[axis])

    def metrics(self, s: HFRState) -> dict:
        copies = s.copies.astype(jnp.float32)
        return {"hfr_copies": copies, "hfr_same_task": s.same / jnp.maximum(copies, 1.0),
                "hfr_log_z": jnp.mean(s.log_z)}
