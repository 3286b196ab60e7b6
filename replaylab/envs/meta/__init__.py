"""Meta-RL environment families (``env=meta:NAME``): PEARL, DMRLAD and SMRL tasks.

No MuJoCo: toy1d (and -twosided, -onesided, -sparse), toy2d, point-robot, sparse-point-robot.
Gymnasium v5 MuJoCo models: cheetah-{vel,dir,goal,vel-sparse,goal-sparse}, ant-{vel,dir,goal,vel-sparse,goal-sparse}.
See ``base`` for the interface and ``family_table()`` for the list.
"""

from replaylab.envs.meta import ant, cheetah, point_robot, toy  # noqa: F401  (registers the families)
from replaylab.envs.meta.base import FAMILIES, Family, MetaEnv, TaskSet, family_table, make_meta_env

__all__ = ["FAMILIES", "Family", "MetaEnv", "TaskSet", "family_table", "make_meta_env"]
