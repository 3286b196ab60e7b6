"""Reference returns on a one-sided toy task's test goals, for reading its results.

- task-blind: the best policy of the kind "walk to one point and stay", the point chosen
  for these test goals;
- search (toy1d-sparse): walk right at full speed until rewarded, then step onto the goal
  and stay;
- oracle (toy1d): walk straight to the goal at full speed and stay.

    python benchmarks/toy_baselines.py                      # toy1d-sparse's claim check
    python benchmarks/toy_baselines.py toy1d 8              # the learning tests' 8 test goals
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from replaylab.envs.meta import make_meta_env


def episode_return(env, path: np.ndarray, goal: float) -> float:
    return float(sum(env.reward_fn(np, None, None, None, np.array([x]), np.array([goal]))[0] for x in path))


def walk_to(x: float, length: int) -> np.ndarray:
    steps = np.minimum(np.arange(1, length + 1), np.ceil(x)) / max(np.ceil(x), 1) * x
    return steps


def search(goal: float, length: int) -> np.ndarray:
    s, path = 0.0, []
    for _ in range(length):
        s = goal if abs(s - goal) <= 1 else min(s + 1.0, 10.0)
        path.append(s)
    return np.array(path)


def main(family: str = "toy1d-sparse", test_tasks: int | None = None) -> None:
    env = make_meta_env(family, **({"num_test": test_tasks} if test_tasks else {}))  # default task sets
    goals, length = env.tasks.params[env.tasks.test_ids, 0], env.episode_length
    blind = max((np.mean([episode_return(env, walk_to(x, length), g) for g in goals]), x)
                for x in np.linspace(0.0, 10.0, 201))
    print(f"{family}: {len(goals)} test goals, {length}-step episodes")
    print(f"task-blind (walk to {blind[1]:.2f} and stay): {blind[0]:.1f}")
    result = {"env": family, "test_goals": len(goals), "task_blind": blind[0], "task_blind_point": blind[1]}
    if "sparse" in family:
        result["search"] = np.mean([episode_return(env, search(g, length), g) for g in goals])
        print(f"search (walk right until rewarded, step onto the goal, stay): {result['search']:.1f}")
        out = Path("benchmarks/results/sparse_toy_baselines.json")
    else:
        straight = [np.minimum(np.arange(1, length + 1), g) for g in goals]  # full speed, then stay
        result["oracle"] = np.mean([episode_return(env, path, g) for path, g in zip(straight, goals)])
        print(f"oracle (walk straight to the goal at full speed and stay): {result['oracle']:.1f}")
        out = Path(f"benchmarks/results/{family}_baselines.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
