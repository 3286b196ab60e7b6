"""MuJoCo plumbing shared by the cheetah and ant families.

Gymnasium's v5 XML models (``half_cheetah.xml``, ``ant.xml``) stepped with the ``mujoco``
bindings directly: frame_skip 5 (dt 0.05), actions clipped to the actuators' ctrlrange, and
Gymnasium v5's reset noise (qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1)) drawn from the episode
generator, so with no task switches an episode starts exactly where Gymnasium's
``reset(seed=seed)`` would. Observations and rewards are computed here, not by Gymnasium.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np

from replaylab.envs.meta.base import MetaEnv, sparsify

ASSETS = Path(importlib.util.find_spec("gymnasium").origin).parent / "envs" / "mujoco" / "assets"


@lru_cache(maxsize=None)
def compiled_model(xml: str):
    """One compiled model per XML and process, shared by every environment (stepping reads
    a model and writes only its own MjData): a run with dozens of evaluation environments
    compiles it, and MuJoCo warns about the XML's deprecated attributes, once."""
    import mujoco

    return mujoco.MjModel.from_xml_path(str(ASSETS / xml))


class MujocoMetaEnv(MetaEnv):
    xml: ClassVar[str]
    frame_skip = 5
    reset_noise = 0.1
    contact_forces = False  # run mj_rnePostConstraint after stepping (fills data.cfrc_ext)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import mujoco

        self._mj = mujoco
        self.model = compiled_model(self.xml)
        self.data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep) * self.frame_skip
        low, high = self.model.actuator_ctrlrange.T
        if not np.array_equal(low, -high) or self.model.nu != self.act_dim:
            raise ValueError(f"{self.xml}: expected {self.act_dim} actuators with symmetric ctrlrange")
        self.action_scale = high.copy()
        self._renderer = None

    def _reset(self, rng: np.random.Generator) -> np.ndarray:
        m, d = self.model, self.data
        self._mj.mj_resetData(m, d)
        d.qpos[:] = m.qpos0 + rng.uniform(-self.reset_noise, self.reset_noise, m.nq)
        d.qvel[:] = self.reset_noise * rng.standard_normal(m.nv)
        self._mj.mj_forward(m, d)
        return self._observe()

    def _simulate(self, a: np.ndarray) -> None:
        self.data.ctrl[:] = a
        self._mj.mj_step(self.model, self.data, nstep=self.frame_skip)
        if self.contact_forces:
            self._mj.mj_rnePostConstraint(self.model, self.data)

    def _observe(self) -> np.ndarray:
        raise NotImplementedError

    radius: ClassVar[float | None] = None  # set: DMRLAD's sparse version of the task term

    @classmethod
    def task_reward(cls, xp, info, params):
        """The task's term of the reward (the rest is the family's costs)."""
        raise NotImplementedError

    @classmethod
    def task_term(cls, xp, info, params):
        task = cls.task_reward(xp, info, params)
        return task if cls.radius is None else sparsify(xp, task, cls.radius)

    def render(self) -> np.ndarray:
        """A 480x480 rgb frame from the model's tracking camera (needs an OpenGL backend, e.g. MUJOCO_GL=egl)."""
        if self._renderer is None:
            self._renderer = self._mj.Renderer(self.model, 480, 480)
        self._renderer.update_scene(self.data, camera="track")
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class TargetVelocity:
    """Mixin: a target forward velocity v* ~ U(0, 3) (PEARL, DMRLAD); task term -|v_x - v*|,
    v_x read from ``info[..., cls.vx]``."""

    vx: ClassVar[int]
    param_names = ("velocity",)
    param_low, param_high = 0.0, 3.0

    @classmethod
    def task_reward(cls, xp, info, params):
        return -xp.abs(info[..., cls.vx] - params[..., 0])
