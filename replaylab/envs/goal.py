"""Goal-conditioned environments (gymnasium-robotics' Fetch and Shadow-hand tasks) for HER.

A goal env observes a dict (observation, achieved_goal, desired_goal) and rewards the
achieved goal against the desired one with ``compute_reward``. Here it is one more
``GymEnv``: the policy observes ``[observation, desired_goal]`` (the goal last), each step
also returns the goal achieved after it (the stored ``achieved_goal`` column) and whether
the task is solved (``success``, logged as ``success_rate``, not stored), and ``goal``
describes the goal for HER: its size and the reward as a JAX function of (achieved goal,
goal) that a test checks against ``compute_reward``.

Compatibility: gymnasium-robotics 1.4.2 cannot reset under mujoco 3.17. Its joint helpers
test ``model.jnt_type[j] in (mjJNT_HINGE, mjJNT_SLIDE)``; mujoco 3.17's enum members no
longer compare equal to the numpy integers that ``jnt_type`` holds when they are on the
left of ``==`` (which ``in`` does), so the assertion fails for every hinge and slide
joint. ``_patch_joint_helpers`` replaces the four helpers with versions that compare
integers (and give a ball joint 3 velocity entries, not the 4 of the original's
``get_joint_qvel``). The patch changes nothing else and a test resets every supported task.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from replaylab.errors import ConfigError

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


@dataclass(frozen=True)
class GoalSpec:
    """What HER needs to know of a goal env: the goal is the last ``dim`` entries of the
    policy's observation, and ``reward_fn(achieved_goal, goal)`` (JAX, batched over leading
    axes) is the env's ``compute_reward``."""

    dim: int
    reward_fn: Callable
    episode_length: int  # the time limit: no episode is longer


# -- the mujoco 3.17 compatibility fix -----------------------------------------------------

_QPOS_SIZE = {0: 7, 1: 4, 2: 1, 3: 1}  # free, ball, slide, hinge
_QVEL_SIZE = {0: 6, 1: 3, 2: 1, 3: 1}


def _joint(model, name: str, sizes: dict, address) -> slice:
    import mujoco

    j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if j < 0:
        raise KeyError(f"joint '{name}' is not part of the model")
    start = int(address[j])
    return slice(start, start + sizes[int(model.jnt_type[j])])


def _set_joint_qpos(model, data, name, value):
    data.qpos[_joint(model, name, _QPOS_SIZE, model.jnt_qposadr)] = np.asarray(value).reshape(-1)


def _set_joint_qvel(model, data, name, value):
    data.qvel[_joint(model, name, _QVEL_SIZE, model.jnt_dofadr)] = np.asarray(value).reshape(-1)


def _get_joint_qpos(model, data, name):
    return data.qpos[_joint(model, name, _QPOS_SIZE, model.jnt_qposadr)].copy()


def _get_joint_qvel(model, data, name):
    return data.qvel[_joint(model, name, _QVEL_SIZE, model.jnt_dofadr)].copy()


def _patch_joint_helpers() -> None:
    from gymnasium_robotics.utils import mujoco_utils

    mujoco_utils.set_joint_qpos = _set_joint_qpos
    mujoco_utils.set_joint_qvel = _set_joint_qvel
    mujoco_utils.get_joint_qpos = _get_joint_qpos
    mujoco_utils.get_joint_qvel = _get_joint_qvel


_registered = False


def register_robotics() -> bool:
    """Register gymnasium-robotics' envs with Gymnasium (once, patched); False if it is
    not installed."""
    global _registered
    if _registered:
        return True
    import gymnasium as gym

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its import prints notes on unrelated envs (Adroit)
            import gymnasium_robotics
    except ImportError:
        return False
    _patch_joint_helpers()
    gym.register_envs(gymnasium_robotics)
    _registered = True
    return True


def is_goal_space(space) -> bool:
    import gymnasium as gym

    return isinstance(space, gym.spaces.Dict) and all(k in space.spaces for k in GOAL_KEYS)


# -- rewards on device -------------------------------------------------------------------

def distance_reward(threshold: float, sparse: bool) -> Callable:
    """Fetch and HandReach: -(|ag - g| > threshold) (sparse) or -|ag - g| (dense)."""
    import jax.numpy as jnp

    def reward(achieved, goal):
        d = jnp.linalg.norm(achieved - goal, axis=-1)
        return -(d > threshold).astype(jnp.float32) if sparse else -d

    return reward


def pose_reward(pos_threshold: float, rot_threshold: float, use_pos: bool, use_rot: bool, sparse: bool,
                ignore_z: bool = False) -> Callable:
    """HandManipulate: goals are (position, quaternion w-first); the rotation distance is
    the angle of q_a * conj(q_b), 2 arccos of its real part <q_a, q_b> (so q and -q count
    as different, as in the env). With ``ignore_z`` (the Pen tasks)
    q_a first takes q_b's z angle, in the env's xyz Euler angles.
    The env's own batched ``compute_reward`` gets that case wrong: it overwrites the third
    row of the batch (``euler_a[2] = euler_b[2]``), not the z angle; ours does what one row
    does, per row."""
    import jax.numpy as jnp

    def reward(achieved, goal):
        zero = jnp.zeros(achieved.shape[:-1], achieved.dtype)
        d_pos = jnp.linalg.norm(achieved[..., :3] - goal[..., :3], axis=-1) if use_pos else zero
        q_a, q_b = achieved[..., 3:], goal[..., 3:]
        if ignore_z:
            (xa, ya, _), (_, _, zb) = quat_to_euler(q_a), quat_to_euler(q_b)
            q_a = euler_to_quat(xa, ya, zb)
        # q_a * conj(q_b) = (w, v); the env takes 2 arccos(w), the same angle for unit
        # quaternions as 2 atan2(|v|, w), which keeps float32 accurate near 0
        w = jnp.sum(q_a * q_b, axis=-1)
        v = q_b[..., :1] * q_a[..., 1:] - q_a[..., :1] * q_b[..., 1:] - jnp.cross(q_a[..., 1:], q_b[..., 1:])
        d_rot = 2.0 * jnp.arctan2(jnp.linalg.norm(v, axis=-1), w) if use_rot else zero
        if sparse:
            return ((d_pos < pos_threshold) & (d_rot < rot_threshold)).astype(jnp.float32) - 1.0
        return -(10.0 * d_pos + d_rot)

    return reward


def quat_to_euler(q):
    """Euler angles (x, y, z) of quaternions (w, x, y, z), read off their rotation matrices in
    gymnasium-robotics' convention (``utils.rotations.quat2euler``), gimbal-lock branch
    included (x = 0 where cos y is about 0). In float32 the split of a rotation between x
    and z is loose within about 1e-4 of gimbal lock, where the env works in float64."""
    import jax.numpy as jnp

    w, x, y, z = (q[..., i] for i in range(4))
    s = 2.0 / jnp.sum(q * q, axis=-1)  # 2 / |q|^2: a quaternion need not be unit length
    m00, m01, m02 = 1 - s * (y * y + z * z), s * (x * y - w * z), s * (x * z + w * y)
    m10, m11, m12 = s * (x * y + w * z), 1 - s * (x * x + z * z), s * (y * z - w * x)
    m22 = 1 - s * (x * x + y * y)
    cos_y = jnp.sqrt(m22 * m22 + m12 * m12)
    regular = cos_y > 4 * jnp.finfo(cos_y.dtype).eps  # the env's 4 eps, at this precision
    ex = jnp.where(regular, -jnp.arctan2(m12, m22), 0.0)
    ey = -jnp.arctan2(-m02, cos_y)
    ez = jnp.where(regular, -jnp.arctan2(m01, m00), -jnp.arctan2(-m10, m11))
    return ex, ey, ez


def euler_to_quat(ex, ey, ez):
    """The inverse of ``quat_to_euler``: the unit quaternion (w, x, y, z) of angles (x, y, z)."""
    import jax.numpy as jnp

    hx, hy, hz = ex / 2, -ey / 2, ez / 2
    cx, sx, cy, sy, cz, sz = jnp.cos(hx), jnp.sin(hx), jnp.cos(hy), jnp.sin(hy), jnp.cos(hz), jnp.sin(hz)
    w = cy * cz * cx + sy * sz * sx
    qx = cy * cz * sx - sy * sz * cx
    qy = -(cy * sz * sx + sy * cz * cx)
    qz = cy * sz * cx - sy * cz * sx
    return jnp.stack([w, qx, qy, qz], axis=-1)


def device_reward(env_id: str, unwrapped) -> Callable:
    """The JAX version of ``unwrapped.compute_reward``, or a one-line ConfigError."""
    sparse = getattr(unwrapped, "reward_type", "sparse") == "sparse"
    name = " ".join(c.__name__ for c in type(unwrapped).__mro__)
    if "Fetch" in name or "HandReach" in name:
        return distance_reward(float(unwrapped.distance_threshold), sparse)
    if "Manipulate" in name:
        return pose_reward(float(unwrapped.distance_threshold), float(unwrapped.rotation_threshold),
                           unwrapped.target_position != "ignore", unwrapped.target_rotation != "ignore", sparse,
                           bool(getattr(unwrapped, "ignore_z_target_rotation", False)))
    raise ConfigError(f"env={env_id}: a goal env replaylab has no device reward for; supported: the Fetch, "
                      "HandReach and HandManipulate tasks of gymnasium-robotics")


def goal_spec(env_id: str, env) -> GoalSpec:
    space = env.observation_space.spaces
    limit = env.spec.max_episode_steps if env.spec is not None else None
    if not limit:
        raise ConfigError(f"env={env_id}: a goal env needs a time limit (HER relabels within episodes)")
    return GoalSpec(dim=int(np.prod(space["desired_goal"].shape)), reward_fn=device_reward(env_id, env.unwrapped),
                    episode_length=int(limit))


def flat_obs(obs: dict) -> np.ndarray:
    """The policy's observation: [observation, desired_goal]."""
    return np.concatenate([np.asarray(obs["observation"], np.float32).reshape(-1),
                           np.asarray(obs["desired_goal"], np.float32).reshape(-1)])
