"""replaylab: sample-efficient off-policy RL for continuous control.

    import replaylab
    run = replaylab.train({"env": "Pendulum-v1", "agent": "sac", "total_steps": 20_000})
    run.progress[-1]["return_mean"], run.run_dir
"""

__version__ = "0.1.0"


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
