"""Checkpoints as plain arrays plus JSON: no pickle, atomic, checksummed, last two kept.

Layout: ``RUN/checkpoints/step_0000050000/{arrays.npz, meta.json}``.

- ``arrays.npz`` holds every leaf of the device state (keyed by its pytree path) and the
  host arrays the loop needs; it is read with ``allow_pickle=False``.
- ``meta.json`` holds the host counters and the SHA-256 of ``arrays.npz``.
- A checkpoint is written into a hidden temporary folder, flushed to disk, then renamed
  into place: a crash leaves either the old set of checkpoints or the new one.
- Loading tries the newest checkpoint first; a corrupted one (bad checksum, unreadable
  or incomplete meta.json, missing or mis-shaped arrays) produces a warning and the
  previous one is used. With no valid checkpoint, loading fails with one line naming each
  checkpoint's problem; a run never silently starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from replaylab.errors import RunError, one_line

FORMAT = 1
KEEP = 2
_PREFIX = "step_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _leaves(tree) -> dict[str, np.ndarray]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"state" + jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write a file atomically (temp file + fsync + rename); a failed write leaves no temp file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(ckpt_root: Path, step: int, state, host_arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{_PREFIX}{step:010d}"
    tmp = ckpt_root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    arrays = _leaves(state)
    arrays.update({f"host/{k}": np.asarray(v) for k, v in host_arrays.items()})
    with open(tmp / "arrays.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    meta = {**meta, "format": FORMAT, "step": step, "sha256": _sha256(tmp / "arrays.npz")}
    write_atomic(tmp / "meta.json", json.dumps(meta, indent=1))
    _fsync_dir(tmp)
    if final.exists():  # a corrupted checkpoint at the same step, skipped when resuming
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_root)
    for old in list_checkpoints(ckpt_root)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    try:
        return sorted(p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))
    except OSError as e:
        raise RunError(f"{ckpt_root}: cannot list the checkpoints ({e.strerror or e})") from None


def _load_one(path: Path, template, meta_types: Mapping[str, Any]) -> tuple[Any, dict[str, np.ndarray], dict]:
    meta = json.loads((path / "meta.json").read_bytes().decode("utf-8"))
    if not isinstance(meta, dict):
        raise ValueError(f"meta.json holds a {type(meta).__name__}, not a mapping")
    if meta.get("format") != FORMAT:
        raise ValueError(f"unknown checkpoint format {meta.get('format')!r}")
    for key, kind in {"sha256": str, "step": int, **meta_types}.items():  # meta.json has no checksum of its own
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(f"meta.json: {key} is missing or not of type {getattr(kind, '__name__', 'number')}")
    if _sha256(path / "arrays.npz") != meta["sha256"]:
        raise ValueError("checksum mismatch")
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for p, spec in flat:
        key = "state" + jax.tree_util.keystr(p)
        if key not in arrays:
            raise ValueError(f"missing array {key}")
        x = arrays[key]
        if x.shape != tuple(spec.shape) or x.dtype != spec.dtype:
            raise ValueError(f"{key} has {x.dtype}{x.shape}, expected {spec.dtype}{tuple(spec.shape)}")
        leaves.append(x)
    state = jax.tree_util.tree_unflatten(treedef, [jax.device_put(x) for x in leaves])
    host = {k[len("host/"):]: v for k, v in arrays.items() if k.startswith("host/")}
    return state, host, meta


def load_latest(ckpt_root: Path, template, meta_types: Mapping[str, Any] | None = None
                ) -> tuple[Any, dict[str, np.ndarray], dict, Path]:
    """Newest valid checkpoint; corrupted ones are skipped, with a warning on stderr once a
    valid one is found (with none, the RunError alone names every problem). ``meta_types``:
    the keys meta.json must hold, with their types."""
    candidates = list_checkpoints(ckpt_root)
    if not candidates:
        raise RunError(f"no checkpoint in {ckpt_root}")
    problems = []
    for path in reversed(candidates):
        try:
            state, host, meta = _load_one(path, template, meta_types or {})
        except Exception as e:  # any unreadable file means: not a usable checkpoint
            problems.append((path, f"{type(e).__name__}: {str(e)[:300]}"))
            continue
        for bad, why in problems:
            print(one_line(f"warning: checkpoint {bad} is unusable ({why}); falling back to the previous one"),
                  file=sys.stderr)
        return state, host, meta, path
    raise RunError(f"no valid checkpoint in {ckpt_root} ({'; '.join(f'{p.name}: {why}' for p, why in problems)})")
