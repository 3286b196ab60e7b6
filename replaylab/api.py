"""The Python API: ``train``, ``resume`` and ``evaluate`` a run directory.

A run directory holds ``config.json`` (the full resolved config, the replaylab version
and the git commit), ``progress.csv``, ``tensorboard/`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from replaylab import __version__
from replaylab.config import Config, from_flat, resolve
from replaylab.errors import ConfigError, RunError
from replaylab.training import checkpoint
from replaylab.training.checkpoint import write_atomic
from replaylab.training.loop import Run, Trainer


def enable_compilation_cache() -> None:
    """Persist XLA executables across processes: restarts and resumes skip most compiling."""
    import jax

    path = os.environ.get("REPLAYLAB_JAX_CACHE", str(Path.home() / ".cache" / "replaylab" / "jax"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _default_run_dir(cfg: Config) -> Path:
    env = cfg.env.replace(":", "_").replace("/", "_")
    return Path("runs") / f"{env}-{cfg.agent}-{cfg.replay}-{time.strftime('%Y%m%d-%H%M%S')}"


def _as_config(config: Config | Mapping[str, Any] | str | None, overrides: Mapping[str, Any]) -> Config:
    if isinstance(config, Config):
        return config.replace(**overrides) if overrides else config
    if isinstance(config, (str, Path)):
        return resolve(str(config), dict(overrides))
    return from_flat({**(config or {}), **overrides})


def train(config: Config | Mapping[str, Any] | str | None = None, **overrides) -> Run:
    """Train from a Config, a mapping of dotted keys, or a config file path, plus overrides.

    >>> run = replaylab.train({"env": "Pendulum-v1", "agent": "sac"}, total_steps=20_000)
    """
    cfg = _as_config(config, overrides)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else _default_run_dir(cfg)
    if (run_dir / "config.json").exists():
        raise ConfigError(f"run_dir={run_dir}: already holds a run; use 'replaylab resume {run_dir}' "
                          "or choose another run_dir")
    cfg = cfg.replace(run_dir=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {**cfg.to_flat(), "replaylab_version": __version__, "git_commit": _git_commit()}
    write_atomic(run_dir / "config.json", json.dumps(record, indent=1) + "\n")
    enable_compilation_cache()
    return Trainer(cfg, run_dir).run()


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"run_dir={run_dir}: no config.json here; is it a replaylab run directory?")
    return from_flat(json.loads(path.read_text()))


def resume(run_dir: str | Path) -> Run:
    """Continue a run from its newest valid checkpoint, exactly as if never interrupted."""
    cfg = load_run_config(run_dir)
    enable_compilation_cache()
    return Trainer(cfg, Path(run_dir)).run(resume=True)


def evaluate(run_dir: str | Path, episodes: int | None = None, video: str | None = None) -> np.ndarray:
    """Evaluate the newest checkpoint's deterministic policy with the run's protocol.

    Returns the returns, shape (seeds, environments, episodes): for a single task,
    ``episodes`` (default: the run's eval_episodes) environments of one episode each; for
    a task distribution, one environment per evaluated task (the test tasks first, then
    the sampled train tasks) and ``episodes`` (default: adapt_episodes) adaptation
    episodes each. ``evaluation`` returns them with the rest of the evaluation."""
    return evaluation(run_dir, episodes, video).returns


def evaluation(run_dir: str | Path, episodes: int | None = None, video: str | None = None):
    """``evaluate``'s full ``EvalResult`` (``replaylab.training.evaluate``): the returns,
    the final beliefs, each episode's return before and after its first task switch, and
    the traced episodes."""
    cfg = load_run_config(run_dir)
    if episodes is not None:
        cfg = cfg.replace(**{"adapt_episodes" if cfg.is_meta else "eval_episodes": episodes})
    enable_compilation_cache()
    trainer = Trainer(cfg, Path(run_dir))
    state, _, meta, _ = checkpoint.load_latest(trainer.ckpt_root, trainer.learner.init_shapes(cfg.seeds))
    frames: list[np.ndarray] = []
    on_frame = None
    if video:
        try:
            trainer.eval_envs[0][0] = cfg.make_env(render=True)
            trainer.eval_envs[0][0].reset(0)
            trainer.eval_envs[0][0].render()
        except Exception as e:  # no OpenGL / display on this machine
            raise RunError(f"--video {video}: no renderer is available here ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}); try MUJOCO_GL=egl or osmesa") from None
        on_frame = frames.append
    result = trainer.run_protocol(state, 10_000 + meta["eval_round"], on_frame=on_frame)
    if video:
        import imageio.v2 as imageio

        imageio.mimsave(video, frames, duration=1 / 30)
    return result

