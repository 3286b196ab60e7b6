"""replaylab: sample-efficient off-policy RL for continuous control.

    import replaylab
    run = replaylab.train({"env": "Pendulum-v1", "agent": "sac", "total_steps": 20_000})
    run.progress[-1]["return_mean"], run.run_dir
"""

import os as _os

__version__ = "0.1.0"

# XLA:CPU's multi-threaded Eigen pool can deadlock intermittently on vmapped graphs in
# recent jaxlib (a wait on a result that never materialises; seen here in about 1 launch
# in 5). Single-threaded Eigen avoids it, and on this CPU it costs no measurable speed
# (see benchmarks/throughput.py). Set before JAX starts its backend; a user's own
# XLA_FLAGS containing the option wins.
if "xla_cpu_multi_thread_eigen" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()


def train(config=None, **overrides):
    """Train a run; see :func:`replaylab.api.train`."""
    from replaylab.api import train as _train

    return _train(config, **overrides)


def resume(run_dir):
    """Continue a run from its newest valid checkpoint; see :func:`replaylab.api.resume`."""
    from replaylab.api import resume as _resume

    return _resume(run_dir)


def evaluate(run_dir, episodes=None, video=None):
    """Evaluate a run's newest checkpoint; see :func:`replaylab.api.evaluate`."""
    from replaylab.api import evaluate as _evaluate

    return _evaluate(run_dir, episodes, video)
