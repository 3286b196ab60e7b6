"""Reference returns on meta:toy1d-sparse's test goals, for reading its claim check.

- task-blind: the best policy of the kind "walk to one point and stay", the point chosen
  for these test goals;
- search: walk right at full speed until rewarded, then step onto the goal and stay.

    python benchmarks/sparse_toy_baselines.py
"""

from __future__ import annotations

import json
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


def main() -> None:
    env = make_meta_env("toy1d-sparse")  # the default task sets, as in configs/compare_sparse_toy.yaml
    goals, length = env.tasks.params[env.tasks.test_ids, 0], env.episode_length
    blind = max((np.mean([episode_return(env, walk_to(x, length), g) for g in goals]), x)
                for x in np.linspace(0.0, 10.0, 201))
    found = np.mean([episode_return(env, search(g, length), g) for g in goals])
    print(f"{len(goals)} test goals, {length}-step episodes")
    print(f"task-blind (walk to {blind[1]:.2f} and stay): {blind[0]:.1f}")
    print(f"search (walk right until rewarded, step onto the goal, stay): {found:.1f}")
    out = Path("benchmarks/results/sparse_toy_baselines.json")
    out.write_text(json.dumps({"test_goals": len(goals), "task_blind": blind[0], "task_blind_point": blind[1],
                               "search": found}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
