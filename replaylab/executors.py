"""Where a sweep's cells run: in this process, in a pool of local worker processes, or on Ray.

A cell is one replaylab command, ``replaylab train CELL_CONFIG`` or ``replaylab resume
RUN_DIR``, so a cell runs the same way whichever executor runs it, and a grid started by one
executor can be continued by another. A cell that fails (a one-line error, a non-finite loss,
a killed worker) becomes an :class:`Outcome` with its error; the other cells go on.

Local workers do not oversubscribe the cores: worker slot i is pinned to its own share of
the usable cores, and a one-core worker runs XLA single-threaded. A worker dies with its
parent (Linux ``PR_SET_PDEATHSIG``), so killing a sweep leaves no orphans writing into it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from replaylab.errors import ConfigError, RunError, one_line

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Job:
    name: str  # for the console, e.g. 'Hopper-v5 nmer'
    command: tuple[str, ...]  # the replaylab CLI arguments, e.g. ('resume', 'runs/x')
    log: Path  # the worker's stdout and stderr (local pool and Ray), appended to


@dataclass(frozen=True)
class Outcome:
    job: Job
    error: str | None  # None: finished; otherwise one line saying why not
    seconds: float


Event = Callable[[str, Job, "Outcome | str"], None]  # ('start', job, where) or ('done', job, outcome)


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_workers(cells: int) -> int:
    """One worker per usable core, no more than there are cells."""
    return max(1, min(len(usable_cores()), cells))


def worker_argv(job: Job) -> list[str]:
    return [sys.executable, "-m", "replaylab", *job.command]


def worker_env(threads: int, gpu_share: float) -> dict[str, str]:
    """The environment of a worker with ``threads`` cores and ``gpu_share`` of a GPU: XLA
    single-threaded on one core; JAX on the CPU only without a GPU share, and preallocating
    only its share (of its usual 75%) of a shared GPU."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if gpu_share == 0:
        env["JAX_PLATFORMS"] = "cpu"
    elif gpu_share < 1:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.75 * gpu_share:.3f}"
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def _child_setup(cores: Sequence[int]) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cores)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    return setup


def log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def failure(returncode: int, log: Path, start: int = 0) -> str:
    """One line for a worker that exited with ``returncode``: its own one-line error if it
    printed one, else the signal that killed it or the last line it wrote; only the log
    from byte ``start`` on (this attempt's output) is read."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    last = lines[-1] if lines else ""
    errors = [ln for ln in lines if ln.startswith("replaylab: error: ")]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"worker killed by {name}" + (f" (last output: {last})" if last else "")
    if errors:
        return errors[-1][len("replaylab: error: "):]
    return one_line(f"exit code {returncode}" + (f": {last}" if last else ""), 500)


# -- executors ---------------------------------------------------------------------------------

def run_inline(jobs: Sequence[Job], call: Callable[[Job], None], on_event: Event) -> list[Outcome]:
    """One cell after the other in this process (``--workers 1``): ``call(job)`` runs it; any
    exception but an interrupt fails that cell alone."""
    outcomes = []
    for job in jobs:
        on_event("start", job, "this process")
        t = time.perf_counter()
        try:
            call(job)
            error = None
        except Exception as e:  # noqa: BLE001 - a cell's failure, whatever it is, is reported, not raised
            error = one_line(str(e) if isinstance(e, (ConfigError, RunError)) else f"{type(e).__name__}: {e}", 500)
        outcomes.append(Outcome(job, error, time.perf_counter() - t))
        on_event("done", job, outcomes[-1])
    return outcomes


def run_pool(jobs: Sequence[Job], workers: int, on_event: Event) -> list[Outcome]:
    """Up to ``workers`` cells at once, each a ``replaylab`` subprocess on its own cores (and,
    on a GPU, its share of the GPU's memory)."""
    cores = usable_cores()
    workers = max(1, min(workers, len(jobs)))
    share = max(1, len(cores) // workers)
    slots = {i: [cores[(i * share + j) % len(cores)] for j in range(share)] for i in range(workers)}
    pending, running, outcomes = list(jobs), {}, []
    try:
        while pending or running:
            free = [i for i in slots if i not in running]
            while pending and free:
                slot, job = free.pop(0), pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                start = log_size(job.log)
                with open(job.log, "ab") as log:
                    proc = subprocess.Popen(worker_argv(job), stdout=log, stderr=subprocess.STDOUT,
                                            env=worker_env(share, 1 / workers), preexec_fn=_child_setup(slots[slot]))
                running[slot] = (proc, job, time.perf_counter(), start)
                on_event("start", job, f"worker {slot} (cores {','.join(map(str, slots[slot]))})")
            time.sleep(POLL_SECONDS)
            for slot, (proc, job, t, start) in list(running.items()):
                if proc.poll() is not None:
                    del running[slot]
                    error = None if proc.returncode == 0 else failure(proc.returncode, job.log, start)
                    outcomes.append(Outcome(job, error, time.perf_counter() - t))
                    on_event("done", job, outcomes[-1])
    except BaseException:  # an interrupt, or an error in this process: the workers stop with it
        _stop([proc for proc, *_ in running.values()])
        raise
    return outcomes


def _stop(procs: Sequence[subprocess.Popen], grace: float = 30.0) -> None:
    """Interrupt workers (their newest checkpoint stays good), killing those that outlive ``grace``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _ray_cell(job: Job, log: str, threads: int, gpu_share: float, cwd: str) -> tuple[int, int]:
    """A Ray task: run one cell's command on the node that got it (with that node's Python);
    returns (exit code, where in the log its output starts). The log first names the node
    and host. XLA's threads follow the CPUs the task reserved; the cores are Ray's to share,
    not pinned."""
    import socket

    import ray

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        f.write(f"ray node {ray.get_runtime_context().get_node_id()} on {socket.gethostname()}\n".encode())
        f.flush()
        start = f.tell()  # the cell's own output, which a failure quotes, starts after that line
        proc = subprocess.run(worker_argv(job), stdout=f, stderr=subprocess.STDOUT, cwd=cwd,
                              env=worker_env(threads, gpu_share), preexec_fn=_child_setup(usable_cores()))
    return proc.returncode, start


def run_ray(jobs: Sequence[Job], address: str, cpus: float, gpus: float, on_event: Event) -> list[Outcome]:
    """Every cell as a Ray task needing ``cpus`` CPUs and ``gpus`` GPUs (fractions allowed).

    ``address``: 'local' starts a Ray instance on this machine, 'auto' joins the running one,
    anything else is a cluster address. OUT must be on storage every node sees.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray: Ray is not installed; pip install 'replaylab[ray]'") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=None if address == "local" else address, logging_level="ERROR",
                     log_to_driver=False, include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
            raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster "
                              f"({one_line(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, 300)})") \
                from None
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_ray_cell)
    threads = max(1, int(cpus))
    refs, outcomes = {}, []
    try:
        for job in jobs:
            ref = task.remote(job, str(job.log.resolve()), threads, gpus, os.getcwd())
            refs[ref] = (job, time.perf_counter())
            on_event("start", job, f"ray ({cpus:g} CPU{', %g GPU' % gpus if gpus else ''})")
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            job, t = refs.pop(done[0])
            try:
                code, start = ray.get(done[0])
                error = None if code == 0 else failure(code, job.log, start)
            except ray.exceptions.RayError as e:  # the worker died, the node was lost, ...
                error = one_line(f"Ray task failed: {str(e).strip().splitlines()[0]}", 500)
            outcomes.append(Outcome(job, error, time.perf_counter() - t))
            on_event("done", job, outcomes[-1])
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()
    return outcomes


__all__ = ["Job", "Outcome", "usable_cores", "default_workers", "worker_argv", "worker_env", "log_size", "failure",
           "run_inline", "run_pool", "run_ray"]
