"""The Python API: ``train``, ``resume`` and ``evaluate`` a run directory.

A run directory holds ``config.json`` (the full resolved config, the replaylab version
and the git commit), ``progress.csv``, ``tensorboard/`` and ``checkpoints/``.

Every run is built by ``_build``, which checks that its training state fits in memory
before anything is allocated (``check_memory``), so ``train``, ``resume`` and ``evaluate``
refuse an impossible run with one line instead of failing inside XLA. Processes on one
machine then take turns to check again and allocate (``memory_reserved``), so the cells of
a local sweep do not all pass the check against the same free memory and then exhaust it
together.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from replaylab import __version__
from replaylab.config import Config, from_flat, load_file, resolve, show_value
from replaylab.errors import ConfigError, RunError, one_line
from replaylab.training import checkpoint
from replaylab.training.checkpoint import write_atomic
from replaylab.training.loop import Run, Trainer

INDEX_MAX = 2**31 - 1  # replay rows are indexed with int32


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
    _refuse_taken(run_dir)  # before building anything
    cfg = cfg.replace(run_dir=str(run_dir))
    enable_compilation_cache()
    trainer = _build(cfg, run_dir)  # refuses a run that cannot fit before its directory exists
    record = {**cfg.to_flat(), "replaylab_version": __version__, "git_commit": _git_commit()}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"run_dir={show_value(str(run_dir))}: cannot write the run there "
                          f"({getattr(e, 'strerror', None) or e})") from None
    with exclusive(run_dir):
        _refuse_taken(run_dir)  # again under the lock: another train of this run_dir may have begun
        try:
            write_atomic(run_dir / "config.json", json.dumps(record, indent=1) + "\n")
        except OSError as e:
            raise ConfigError(f"run_dir={show_value(str(run_dir))}: cannot write the run there "
                              f"({e.strerror or e})") from None
        try:
            return trainer.run(reserve=lambda: memory_reserved(trainer))
        except ConfigError:
            if not (run_dir / "progress.csv").exists():  # refused by the second memory check, before any
                (run_dir / "config.json").unlink(missing_ok=True)  # state: the same train can be tried again
            raise


def _refuse_taken(run_dir: Path) -> None:
    try:
        taken = (run_dir / "config.json").exists()
    except (OSError, ValueError):  # no permission to look, or a NUL byte: creating it says so
        taken = False
    if taken:
        raise ConfigError(f"run_dir={run_dir}: already holds a run; use 'replaylab resume {run_dir}' "
                          "or choose another run_dir")


def load_run_config(run_dir: str | Path) -> Config:
    """The config of a run directory, from its config.json; whatever the file holds, a
    failure is one ConfigError naming the file."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"run_dir={show_value(str(run_dir))}: no config.json here; is it a replaylab run "
                          "directory?")
    try:
        return from_flat(load_file(path))
    except ConfigError as e:
        text = str(e)
        prefix = f"config file '{one_line(path, 300)}'"
        raise ConfigError(text if text.startswith(prefix) else f"{prefix}: {text}") from None


def resume(run_dir: str | Path) -> Run:
    """Continue a run from its newest valid checkpoint, exactly as if never interrupted."""
    cfg = load_run_config(run_dir)
    enable_compilation_cache()
    trainer = _build(cfg, Path(run_dir))
    with exclusive(Path(run_dir)):
        _check_logs(trainer)
        return trainer.run(resume=True, reserve=lambda: memory_reserved(trainer))


@contextmanager
def exclusive(run_dir: Path, wait: float = 30.0) -> Iterator[None]:
    """Hold ``run_dir`` for this process while it trains (an flock on the directory, released
    when the process ends, however it ends). A second train or resume of the same run waits
    up to ``wait`` seconds, for a killed process to be gone, then fails in one line."""
    def give_up(waited: float) -> None:
        if waited > wait:
            raise ConfigError(f"run_dir={run_dir}: another replaylab process is training this run; "
                              "wait for it to end or stop it")

    fd = os.open(run_dir, os.O_RDONLY)
    try:
        _flock(fd, give_up)
        yield
    finally:
        os.close(fd)


def _flock(fd: int, waiting: Callable[[float], None]) -> None:
    """Take an exclusive flock on ``fd``, polling; while another process holds it,
    ``waiting(seconds waited)`` is called between polls (it may raise to give up)."""
    start = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            waiting(time.monotonic() - start)
            time.sleep(0.05)


def _check_logs(trainer: Trainer) -> None:
    """Before resuming: progress.csv (and a meta run's tasks.csv) must be this run's, since
    resuming keeps their rows up to the checkpoint; one RunError naming the file if not."""
    path = trainer.run_dir / "progress.csv"
    if not path.is_file():
        raise RunError(f"{path}: missing; resuming keeps its rows up to the checkpoint, so the run cannot go on "
                       "without it (restore it, or start a new run)")
    for p in (path, trainer.run_dir / "tasks.csv"):
        if p.exists():
            try:
                text = p.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise RunError(f"{p}: unreadable ({type(e).__name__}: {e}); the run cannot go on") from None
            if p == path and text.split("\n", 1)[0] != ",".join(trainer.columns):
                raise RunError(f"{p}: its first line is not this run's header ({len(trainer.columns)} columns from "
                               f"env_step to {trainer.columns[-1]}); the file is damaged, so the run cannot go on")


def _build(cfg: Config, run_dir: Path) -> Trainer:
    """The run's Trainer (environments and compiled functions, nothing allocated on the
    device yet), once ``check_memory`` has passed."""
    trainer = Trainer(cfg, run_dir)
    check_memory(trainer)
    return trainer


MEMORY_TURN = "replaylab-memory.lock"
TURN_NOTICE_S = 60.0  # a wait this long is worth a line on stderr


@contextmanager
def memory_turn() -> Iterator[None]:
    """This machine's memory turn: an flock on ``MEMORY_TURN`` in the temporary directory,
    so that processes check the free memory and allocate one after the other. The lock goes
    with the process, however it ends. Where the file cannot be opened or locked (another
    user's, say), no turn is taken and the check is per process."""
    try:
        fd = os.open(Path(tempfile.gettempdir()) / MEMORY_TURN, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        fd = None
    if fd is None:
        yield
        return
    noticed = []

    def notice(waited: float) -> None:
        if waited > TURN_NOTICE_S and not noticed:
            print(f"replaylab: waiting for another replaylab process on this machine to allocate its memory "
                  f"({Path(tempfile.gettempdir()) / MEMORY_TURN})", file=sys.stderr, flush=True)
            noticed.append(True)

    try:
        try:
            _flock(fd, notice)
        except OSError:  # a filesystem without flock: no turn
            pass
        yield
    finally:
        os.close(fd)


@contextmanager
def memory_reserved(trainer: Trainer) -> Iterator[None]:
    """Hold this machine's memory turn, check the memory again inside it (others may have
    allocated since ``_build`` checked), and let the caller allocate the state before the
    next process checks. A turn lasts one allocation (``Trainer._fresh`` compiles the
    initialiser before it asks): a fraction of a second to seconds."""
    with memory_turn():
        check_memory(trainer)
        yield


def memory_available() -> int | None:
    """Bytes of memory free for a new allocation: MemAvailable in /proc/meminfo, else the
    free physical pages (os.sysconf); None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _device_available() -> int | None:
    """Free bytes of the accelerator the state lives on; None on the CPU (host memory is it)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    try:
        stats = device.memory_stats() or {}
    except Exception:  # a backend without memory statistics: nothing to check against
        return None
    limit = stats.get("bytes_limit")
    return limit - stats.get("bytes_in_use", 0) if limit else None


def memory_needs(trainer: Trainer) -> dict[str, int]:
    """Bytes of a run's training state for all seeds, by the setting that sizes each part
    (buffer_size: the replay storage, the sampler's index and the task index; model.buffer_rows:
    MBPO's ensemble and model buffer; ...), plus the evaluation's result arrays. Exact for the
    state: its shapes come from the learner's init, traced without allocating anything."""
    cfg = trainer.cfg
    shapes = trainer.learner.init_shapes(cfg.seeds)
    owner = {"storage": "buffer_size", "sampler": "buffer_size", "tasks": "buffer_size", "model": "model.buffer_rows",
             "agent": "agent.hidden_sizes", "inference": "inference", "belief": "inference", "relabel": "relabel"}
    needs: dict[str, int] = {}
    for f in dataclasses.fields(shapes):
        leaves = jax.tree.leaves(getattr(shapes, f.name))
        size = sum(int(np.prod(x.shape, dtype=object)) * x.dtype.itemsize for x in leaves)
        key = owner.get(f.name, "seeds")
        needs[key] = needs.get(key, 0) + size
    p = trainer.protocol  # returns, before/after the switch, success (float64) and switched (bool)
    needs["eval_episodes" if not cfg.is_meta else "adapt_episodes"] = cfg.seeds * len(p.tasks) * p.episodes * 33
    return needs


def check_memory(trainer: Trainer) -> None:
    """Refuse a run whose state cannot fit, before anything is allocated: one ConfigError
    naming the setting behind the largest part, the bytes needed and the bytes available.
    The state counts twice where it is built: init makes it seed by seed and then stacks
    the seeds. Every checkpoint copies it to host memory (on the CPU, the same memory).
    Then the replay capacities must fit the int32 row index."""
    cfg = trainer.cfg
    needs = memory_needs(trainer)
    eval_key = "adapt_episodes" if cfg.is_meta else "eval_episodes"
    state = sum(v for k, v in needs.items() if k != eval_key)
    device = _device_available()
    checks = [("memory", 2 if device is None else 1, needs[eval_key], memory_available())]  # host
    if device is not None:
        checks.append(("device memory", 2, 0, device))
    for what, copies, extra, available in checks:
        need = copies * state + extra
        if available is not None and need > available:
            key = max(needs, key=needs.get)
            value = {"inference": cfg.inference, "relabel": cfg.relabel,
                     "model.buffer_rows": getattr(trainer.model, "buffer_rows", None)}.get(key, cfg.to_flat().get(key))
            auto = f" (auto: {trainer.model.capacity} rows)" if key == "model.buffer_rows" and not value else ""
            seeds = f"{cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}"
            parts = f"{_human(state)}, {_human(needs[key])} of it sized by {key}"
            raise ConfigError(f"{key}={show_value(value)}{auto}: the run needs {need} bytes ({_human(need)}) of "
                              f"{what}, {copies} x its training state of {seeds} ({parts}), but {available} bytes "
                              f"({_human(available)}) are available; lower {key}{' or seeds' if cfg.seeds > 1 else ''}")
    model_rows = getattr(trainer.model, "capacity", 0)
    for key, rows, shown in (("buffer_size", cfg.buffer_size, cfg.buffer_size),
                             ("model.buffer_rows", model_rows, getattr(trainer.model, "buffer_rows", 0) or
                              f"0 (auto: {model_rows} rows)")):
        if rows > INDEX_MAX:
            raise ConfigError(f"{key}={shown}: expected at most {INDEX_MAX} rows (replay rows are indexed with int32)")


def _human(n: int) -> str:
    """Bytes in decimal units, three significant digits: 82000005925064 -> '82 TB'."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    i = min(max((len(str(n)) - 1) // 3, 0), len(units) - 1)
    return f"{n / 1000**i:.3g} {units[i]}"


def evaluate(run_dir: str | Path, episodes: int | None = None, video: str | None = None) -> np.ndarray:
    """Evaluate the newest checkpoint's deterministic policy with the run's protocol.

    Returns the returns, shape (seeds, slots, episodes): for a single task, ``episodes``
    (default: the run's eval_episodes) slots of one episode each; for a task distribution,
    one slot per evaluated task (the test tasks first, then the sampled train tasks) and
    ``episodes`` (default: adapt_episodes) adaptation episodes each. The slots run in waves
    on at most ``evaluate.EVAL_ENVS`` reused environments. ``evaluation`` returns them with
    the rest of the evaluation."""
    return evaluation(run_dir, episodes, video).returns


def evaluation(run_dir: str | Path, episodes: int | None = None, video: str | None = None):
    """``evaluate``'s full ``EvalResult`` (``replaylab.training.evaluate``): the returns,
    the final beliefs, each episode's return before and after its first task switch, and
    the traced episodes."""
    cfg = load_run_config(run_dir)
    if episodes is not None:
        cfg = cfg.replace(**{"adapt_episodes" if cfg.is_meta else "eval_episodes": episodes})
    enable_compilation_cache()
    trainer = _build(cfg, Path(run_dir))
    with memory_reserved(trainer):
        state, _, meta, _ = checkpoint.load_latest(trainer.ckpt_root, trainer.learner.init_shapes(cfg.seeds),
                                                   {"eval_round": int})
        jax.block_until_ready(state)
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

