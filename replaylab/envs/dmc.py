"""dm_control adapter: ``DOMAIN-TASK`` names, flattened observations, action repeat.

dm_control signals the end of an episode with ``StepType.LAST``; a discount of 0 there is
a true terminal, a discount > 0 (the usual 1000-step limit) is a truncation that must
still be bootstrapped through.
"""

from __future__ import annotations

import os

import numpy as np

from replaylab.errors import ConfigError

os.environ.setdefault("MUJOCO_GL", "egl")


def _split(name: str) -> tuple[str, str]:
    domain, _, task = name.partition("-")
    return domain, task


def check_dmc_id(name: str) -> None:
    from dm_control import suite

    if _split(name) not in suite.ALL_TASKS:
        examples = ", ".join(f"dmc:{d}-{t}" for d, t in list(suite.BENCHMARKING)[:3])
        raise ConfigError(f"env=dmc:{name}: not a dm_control suite task (e.g. {examples})")


class DMCEnv:
    def __init__(self, name: str, action_repeat: int = 1):
        check_dmc_id(name)
        from dm_control import suite

        domain, task = _split(name)
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.act_dim = int(np.prod(spec.shape))
        self.obs_dim = int(sum(np.prod(s.shape) for s in self._env.observation_spec().values()))
        self._repeat = action_repeat

    @staticmethod
    def _flat(observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in observation.values()])

    tasks = None  # a single task
    goal = None  # no goal (HER)
    termination = None  # the suite's rules are not written on observations

    def reset(self, seed: int, task: int = 0, switch_pool=None) -> np.ndarray:
        self._env.task.random.seed(int(seed) % 2**32)
        return self._flat(self._env.reset().observation)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        total = 0.0
        for _ in range(self._repeat):
            ts = self._env.step(a)
            total += float(ts.reward or 0.0)
            if ts.last():
                break
        last = ts.last()
        terminated = bool(last and ts.discount == 0.0)
        return self._flat(ts.observation), total, terminated, bool(last and not terminated), {}

    def render(self) -> np.ndarray:
        return self._env.physics.render(height=240, width=320, camera_id=0)

    def close(self) -> None:
        self._env.close()
