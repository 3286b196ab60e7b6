"""Task sets, the meta-environment base class and the family registry.

A meta environment is a family of MDPs that share dynamics and differ in a reward parameter
vector (a "task"). Tasks come as one fixed ``TaskSet``: rows ``[0, num_train)`` of ``params``
are the train tasks, the rest the test tasks. Continuous task distributions are drawn from one
generator seeded with ``TASK_SEED`` and split, so train and test tasks are disjoint (the
DMRLAD/PEARL velocity and goal envs reseeded per call, which made their test tasks equal to
the first train tasks; we don't copy that).

Every step stores a small float32 ``info`` vector with what the reward needs (positions,
velocities, ``|a|^2``, contact cost, ...). ``reward_fn(xp, obs, action, next_obs, info, params)``
recomputes reward and termination from stored data for any task, with NumPy or jax.numpy,
vectorised over any leading axes; ``step`` computes its own reward with it, so stored data
always suffices to relabel a transition with another task. (All families here read only
``info`` and ``params``, so normalising or stacking stored observations cannot break relabeling.)

Episodes: ``reset(seed, task, switch_pool)`` seeds one ``np.random.Generator`` that draws the
initial state and every in-episode task switch, so an episode is a function of its reset seed
and actions. With ``change_steps > 0``, once that many steps have passed since the start or the
last switch, each ``step`` first switches (probability ``change_prob``) to a task drawn uniformly
from ``switch_pool`` (default: the train ids), excluding the current one when the pool allows;
``extras["task"]`` is the task the transition's reward was computed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from replaylab.errors import ConfigError

TASK_SEED = 1337  # the one generator all task parameters are drawn from (PEARL's seed)


@dataclass(frozen=True, eq=False)
class TaskSet:
    """Task parameters, train rows first: ``params`` is (num_train + num_test, P) float32."""

    names: tuple[str, ...]
    params: np.ndarray
    num_train: int
    num_test: int

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))
        params = np.array(self.params, np.float32)
        if params.shape != (self.num_train + self.num_test, len(self.names)):
            raise ValueError(f"task params have shape {params.shape}, expected "
                             f"({self.num_train} + {self.num_test}, {len(self.names)})")
        params.setflags(write=False)
        object.__setattr__(self, "params", params)

    @property
    def train_ids(self) -> np.ndarray:
        return np.arange(self.num_train)

    @property
    def test_ids(self) -> np.ndarray:
        return np.arange(self.num_train, self.num_train + self.num_test)


def sparsify(xp, dense, radius: float, inside: float = 2.0, outside: float = -2.0):
    """A sparse reward: ``inside + dense`` within the radius (``dense >= -radius``), else
    ``outside``. The defaults are DMRLAD's rule; PEARL's sparse point robot uses 1 and 0."""
    return xp.where(dense >= -radius, inside + dense, outside)


class MetaEnv:
    """Base class: action clipping/rescaling, episode clock and in-episode task switches.

    Subclasses set the class attributes, ``_reset(rng) -> obs`` and ``_advance(a) -> (obs, info)``
    (``a`` already clipped and rescaled; ``info`` float32 from the new simulator state), and
    ``reward_fn``. Task parameters come from ``sample_params`` (uniform over ``param_low`` ..
    ``param_high`` by default) unless ``make_tasks`` is overridden.
    """

    obs_dim: ClassVar[int]
    act_dim: ClassVar[int]
    info_dim: ClassVar[int]
    param_names: ClassVar[tuple[str, ...]]
    param_low: ClassVar[Any] = None
    param_high: ClassVar[Any] = None
    action_scale: Any = 1.0  # actions in [-1, 1] are multiplied by this (symmetric bounds)
    # the time-response plot: (label, f(obs, info) -> the quantity, index of the task parameter it tracks)
    response: ClassVar[tuple[str, Callable[[Any, Any], Any], int] | None] = None
    terminates: ClassVar[bool] = False  # can an episode end before episode_length (a fall)?
    goal: ClassVar[None] = None  # tasks, not goals (HER)
    termination: ClassVar[None] = None  # per task: ``reward_fn`` returns it

    def __init__(self, tasks: TaskSet, episode_length: int, change_steps: int = 0, change_prob: float = 1.0):
        if tasks.names != self.param_names:
            raise ValueError(f"task names {tasks.names} != {self.param_names}")
        self.tasks = tasks
        self.episode_length = int(episode_length)
        self.change_steps = int(change_steps)
        self.change_prob = float(change_prob)
        self.task = 0
        self._params = tasks.params[0]
        self._pool = tasks.train_ids
        self._rng = np.random.default_rng(0)
        self._t = self._since = 0
        self._obs = np.zeros(self.obs_dim, np.float32)

    # ---- tasks -------------------------------------------------------------------------------
    @classmethod
    def sample_params(cls, rng: np.random.Generator, n: int) -> np.ndarray:
        """n task parameter rows; row i must not depend on n (prefix-stable)."""
        return rng.uniform(cls.param_low, cls.param_high, (n, len(cls.param_names)))

    @classmethod
    def make_tasks(cls, num_train: int, num_test: int) -> TaskSet:
        params = cls.sample_params(np.random.default_rng(TASK_SEED), num_train + num_test)
        return TaskSet(cls.param_names, params, num_train, num_test)

    # ---- episode -----------------------------------------------------------------------------
    def reset(self, seed: int, task: int = 0, switch_pool: np.ndarray | None = None) -> np.ndarray:
        n = len(self.tasks.params)
        pool = self.tasks.train_ids if switch_pool is None else np.asarray(switch_pool, np.int64).reshape(-1)
        if not 0 <= task < n or pool.size == 0 or pool.min() < 0 or pool.max() >= n:
            raise ValueError(f"task {task} / switch_pool {pool} out of range for {n} tasks")
        self._rng = np.random.default_rng(seed)
        self._pool = pool
        self._set_task(int(task))
        self._t = self._since = 0
        self._obs = self._reset(self._rng)
        return self._obs

    def _set_task(self, task: int) -> None:
        self.task = task
        self._params = self.tasks.params[task]
        self._since = 0

    def _maybe_switch(self) -> None:
        if self._rng.random() >= self.change_prob:
            return
        pool = self._pool
        if pool.size > 1:
            others = pool[pool != self.task]
            pool = others if others.size else pool
        self._set_task(int(pool[self._rng.integers(pool.size)]))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.change_steps and self._since >= self.change_steps:
            self._maybe_switch()
        action = np.asarray(action, np.float32)
        obs, info = self._advance(np.minimum(np.maximum(action, -1.0), 1.0) * self.action_scale)
        reward, terminated = self.reward_fn(np, self._obs, action, obs, info, self._params)
        self._obs = obs
        self._t += 1
        self._since += 1
        extras = {"task": np.int32(self.task), "info": info}
        return obs, float(reward), bool(terminated), self._t >= self.episode_length, extras

    @classmethod
    def reward_fn(cls, xp, obs, action, next_obs, info, params):
        """(reward, terminated) for task ``params`` (..., P) from stored transitions (..., dim)."""
        raise NotImplementedError

    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _advance(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def render(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no renderer")

    def close(self) -> None:
        pass


def no_termination(xp, reward):
    """The termination of a family that never terminates: all False, shaped like ``reward``."""
    return xp.zeros(xp.shape(reward), bool)


# ---- registry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    name: str
    description: str  # one line
    params: tuple[str, ...]
    num_train: int
    num_test: int
    episode_length: int
    mujoco: bool
    make: Callable[..., MetaEnv]  # the env class: make(tasks, episode_length, change_steps, change_prob)


FAMILIES: dict[str, Family] = {}


def register(name: str, *, num_train: int, num_test: int, episode_length: int, mujoco: bool = False):
    """Class decorator: registers the class as family ``name``; the description is its docstring's first line."""

    def deco(cls):
        description = (cls.__doc__ or "").strip().splitlines()[0]
        FAMILIES[name] = Family(name, description, cls.param_names, num_train, num_test, episode_length,
                                mujoco, cls)
        return cls

    return deco


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"env=meta:{name}: unknown meta-RL family; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def make_meta_env(name: str, *, num_train: int | None = None, num_test: int | None = None,
                  episode_length: int | None = None, change_steps: int = 0, change_prob: float = 1.0) -> MetaEnv:
    """Build family ``name`` (None: the family's default count / episode length)."""
    fam = _family(name)
    num_train = fam.num_train if num_train is None else int(num_train)
    num_test = fam.num_test if num_test is None else int(num_test)
    episode_length = fam.episode_length if episode_length is None else int(episode_length)
    for key, value in (("num_train", num_train), ("num_test", num_test), ("episode_length", episode_length)):
        if value < 1:
            raise ConfigError(f"meta:{name}: {key}={value}; must be >= 1")
    if change_steps < 0 or not 0.0 <= change_prob <= 1.0:
        raise ConfigError(f"meta:{name}: change_steps={change_steps} must be >= 0 and "
                          f"change_prob={change_prob} in [0, 1]")
    return fam.make(fam.make.make_tasks(num_train, num_test), episode_length, change_steps, change_prob)


def family_table() -> list[dict]:
    """One row per family (no environment is built)."""
    return [{"name": f.name, "description": f.description, "params": list(f.params), "num_train": f.num_train,
             "num_test": f.num_test, "episode_length": f.episode_length, "obs_dim": f.make.obs_dim,
             "act_dim": f.make.act_dim, "info_dim": f.make.info_dim, "mujoco": f.mujoco}
            for f in FAMILIES.values()]
