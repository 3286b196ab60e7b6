"""Property-based fuzzing of the command line, config files and run directories (hypothesis).

Every generated input is invalid by construction (a valid one would start a training run),
so each case must end with exit code 2 (a user's mistake) or 1 (a run that cannot go on),
exactly one line on stderr, ``replaylab: error: ...``, naming the key or the file, and no
traceback: an exception escaping ``main`` fails the case. ``main`` runs in-process (one JAX
start-up for all cases); a few cases also run the real entry point in a subprocess. The
damaged run directories are copies of one tiny real run, made once per module.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaylab import api
from replaylab.cli import main
from replaylab.config import (AGENT_FIELDS, LIST_MAX, METHOD_KINDS, STEPS_MAX, TOP_FIELDS, UPPER_BOUNDS, from_flat)
from replaylab.training.evaluate import EVAL_ENVS, pool_width
from replaylab.training.loop import HostState, Trainer
from tests.conftest import cli

FUZZ = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
TINY = ["env=Pendulum-v1", "total_steps=100", "warmup_steps=100", "eval_interval=100", "checkpoint_interval=50",
        "eval_episodes=1", "buffer_size=100", "batch_size=8", "agent.hidden_sizes=[4]", "progress_bar=false",
        "tensorboard=false"]
# valid settings put before the bad one: should a generated case be valid after all (a bug of
# this file), it trains one step and fails the exit-code assertion instead of training for long
GUARD = {"total_steps": 1, "warmup_steps": 1, "eval_episodes": 1, "buffer_size": 10}


def run_main(args: list[str]) -> tuple[int, str]:
    """``replaylab.cli.main(args)`` in-process: (exit code, stderr). An exception other than
    argparse's SystemExit propagates and fails the case."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(args)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def assert_one_line(code: int, stderr: str, codes: tuple[int, ...], *names: str) -> str:
    """Exit code in ``codes``, one line ``replaylab: error: ...`` on stderr holding one of
    ``names`` (the key or the file), no traceback; returns the line."""
    lines = stderr.splitlines()
    assert code in codes, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("replaylab: error: "), stderr
    assert "Traceback" not in stderr
    assert not names or any(n in lines[0] for n in names), (names, lines[0])
    return lines[0]


# -- the settings and their bad values ----------------------------------------------------------

def _settings() -> list[tuple[dict, str, object]]:
    """(method selection the key needs, key, field) for every setting; a method's parameter
    is set with the first method that takes it."""
    out = [({}, k, f) for k, f in TOP_FIELDS.items()] + [({}, f"agent.{k}", f) for k, f in AGENT_FIELDS.items()]
    seen = set()
    for kind, registry in METHOD_KINDS.items():
        for method, cls in registry.items():
            for name, f in cls.params().items():
                if (kind, name) not in seen:
                    seen.add((kind, name))
                    out.append(({kind: method}, f"{kind}.{name}", f))
    return out


SETTINGS = _settings()
META_ONLY = {"meta_batch", "train_tasks", "test_tasks", "episode_length", "change_steps", "change_prob",
             "prior_episodes", "posterior_episodes", "extra_episodes", "adapt_episodes", "eval_train_tasks"}
FREE_TEXT = {"run_dir", "wandb_project"}  # any string is valid: only other types are bad
words = st.text(string.ascii_letters + string.digits + "_-", max_size=8).map(lambda s: "zz" + s)  # never valid
non_numeric = st.one_of(words, st.sampled_from(["nan", "inf", "-inf", "[]", "{}", "1,2", "0x", "1e999x", "é", "   "]))
junk_lists = st.lists(st.one_of(st.integers(-5, 5), words, st.booleans()), min_size=1, max_size=4).map(
    lambda xs: xs + ["x"])  # a list with a string in it: no scalar setting and no width list takes it


def _bounds(key: str, f) -> tuple[object, object]:
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if hi is None and "int" in str(f.type):
        hi = UPPER_BOUNDS.get(key, STEPS_MAX)
    return lo, hi


def bad_values(key: str, f) -> st.SearchStrategy:
    """Values that ``key`` can never take, by the field's type, bounds and choices."""
    t = str(f.type)
    base, optional = t.replace(" | None", ""), t.endswith("| None")
    lo, hi = _bounds(key, f)
    options = []  # the values of the right type but out of range first, then the wrong types
    if key in META_ONLY:  # any value but null is refused on a single-task env
        options.append(st.integers(0, 5))
    if f.metadata.get("choices"):
        options += [words, words, st.integers(), st.booleans()]
    elif base == "int":
        options += [st.integers(min_value=hi + 1, max_value=hi * 10**6), st.integers(min_value=hi + 1),
                    st.integers(max_value=lo - 1, min_value=lo - 10**9), non_numeric, st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())]
    elif base == "float":
        if lo is not None:
            options.append(st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False))
        if hi is not None:
            options.append(st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False))
        options += [st.sampled_from([math.nan, math.inf, -math.inf]), words, st.booleans()]
    elif base == "bool":
        options += [words, st.integers(), st.floats(allow_nan=False)]
    elif base == "str":
        if key not in FREE_TEXT:
            options.append(words)
        if key == "run_dir":
            options.append(words.map(lambda w: w + "\x00"))  # no path holds a NUL byte
        options += [st.integers(), st.floats(allow_nan=False), st.booleans()]
    elif base == "tuple[int, ...]":
        entries = st.integers(max_value=lo - 1, min_value=-10) | st.integers(min_value=hi + 1, max_value=hi * 1000)
        options += [st.lists(st.integers(1, 4), max_size=3).flatmap(lambda xs: entries.map(lambda e: xs + [e])),
                    st.integers(1, 4).map(lambda n: [n] * (LIST_MAX + 1)), st.just([]), words, st.booleans(),
                    st.floats(allow_nan=False).filter(lambda x: not x.is_integer())]
    else:
        raise AssertionError(f"no bad values for {key}: {t}")
    options.append(junk_lists)
    if not optional:
        options.append(st.none())
    return st.one_of(options)


@st.composite
def bad_setting(draw) -> tuple[dict, str, object]:
    needs, key, f = draw(st.sampled_from(SETTINGS))
    return needs, key, draw(bad_values(key, f))


def as_text(v) -> str:
    """A value as typed on the command line (YAML reads JSON)."""
    if isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # nan, inf, -inf: read as strings, then as numbers, and refused
    return json.dumps(v)


def cli_args(needs: dict, key: str, value, run_dir: Path) -> list[str]:
    guard = {k: v for k, v in GUARD.items() if k != key}
    args = [f"{k}={as_text(v)}" for k, v in {**guard, **needs}.items()]
    if key != "run_dir":
        args.append(f"run_dir={run_dir}")
    return args + [f"{key}={as_text(value)}"]


@settings(FUZZ, max_examples=180)
@given(bad_setting())
def test_bad_values_on_the_command_line(tmp_path_factory, case):
    needs, key, value = case
    run_dir = tmp_path_factory.getbasetemp() / "never"
    code, err = run_main(["train", *cli_args(needs, key, value, run_dir)])
    assert_one_line(code, err, (2,), key)
    assert not run_dir.exists()


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # ints and strings (TOML basic strings take JSON's escapes)


def write_config(path: Path, data: dict) -> None:
    """``data`` (flat dotted keys) as a YAML, TOML or JSON file, by the suffix."""
    if path.suffix == ".toml":
        path.write_text("".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in data.items()))
    elif path.suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))


suffixes = st.sampled_from([".yaml", ".yml", ".toml", ".json"])


@settings(FUZZ, max_examples=100)
@given(bad_setting(), suffixes)
def test_bad_values_in_config_files(tmp_path_factory, case, suffix):
    needs, key, value = case
    if suffix == ".toml" and value is None:
        value = []  # TOML has no null
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as tmp:
        path = Path(tmp) / f"run{suffix}"
        data = {**{k: v for k, v in GUARD.items() if k != key}, **needs, key: value}
        if key != "run_dir":
            data["run_dir"] = str(Path(tmp) / "never")
        write_config(path, data)
        code, err = run_main(["train", str(path)])
        assert_one_line(code, err, (2,), key, path.name)
        assert not (Path(tmp) / "never").exists()


KNOWN = set(TOP_FIELDS) | {f"agent.{k}" for k in AGENT_FIELDS} | {"replaylab_version", "git_commit"}


@st.composite
def misspelled(draw) -> str:
    """A known key with one letter deleted, inserted, replaced or two swapped; or a made-up
    key; never a known key."""
    _, key, _ = draw(st.sampled_from(SETTINGS))
    i = draw(st.integers(0, len(key) - 1))
    c = draw(st.sampled_from(string.ascii_lowercase + "._"))
    edits = [key[:i] + key[i + 1:], key[:i] + c + key[i:], key[:i] + c + key[i + 1:],
             key[:i] + key[i + 1:i + 2] + key[i] + key[i + 2:]]
    out = draw(st.one_of(st.sampled_from(edits), words, words.map(lambda w: f"agent.{w}"),
                         words.map(lambda w: f"replay.{w}")))
    return out if out not in KNOWN and out.strip() and "=" not in out else "zz" + out


@settings(FUZZ, max_examples=60)
@given(misspelled(), st.sampled_from(["cli", ".yaml", ".toml", ".json"]))
def test_unknown_and_misspelled_keys(tmp_path_factory, key, where):
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as tmp:
        data = {**GUARD, "run_dir": str(Path(tmp) / "never"), key: 1}
        if where == "cli":
            code, err = run_main(["train", *(f"{k}={as_text(v)}" for k, v in data.items())])
        else:
            path = Path(tmp) / f"c{where}"
            write_config(path, data)
            code, err = run_main(["train", str(path)])
        line = assert_one_line(code, err, (2,))
        assert "unknown key" in line and key.split(".")[-1][:20] in line
        assert not (Path(tmp) / "never").exists()


INVALID_UTF8 = st.sampled_from([b"\xff", b"\xfe", b"\xc0", b"\xc1", b"\xf5", b"\x80", b"\xed\xa0\x80"])


@st.composite
def broken_file(draw) -> tuple[str, bytes]:
    """(suffix, content): a config that does not parse, is not UTF-8, is not a mapping, or
    has a suffix no reader takes."""
    suffix = draw(suffixes)
    good = {"total_steps": 1, "agent.gamma": 0.9, "env": "Pendulum-v1"}
    text = {".toml": "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in good.items()),
            ".json": json.dumps(good)}.get(suffix, yaml.safe_dump(good))
    kind = draw(st.sampled_from(["non-utf8", "unclosed", "not-a-mapping", "suffix", "deep", "alias-bomb"]))
    if kind == "non-utf8":
        data = text.encode()
        i = draw(st.integers(0, len(data)))
        return suffix, data[:i] + draw(INVALID_UTF8) + data[i:]
    if kind == "unclosed":
        junk = draw(words)
        return suffix, (text + {".toml": f"{junk} = [1, 2\n", ".json": "{"}.get(suffix, f"{junk}: [1, 2\n")).encode()
    if kind == "not-a-mapping":
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), words))
        if suffix == ".toml":
            return suffix, f"{draw(words)}\n".encode()  # a bare word: not TOML
        return suffix, json.dumps(value).encode()
    if kind == "suffix":
        return draw(st.sampled_from([".txt", ".ini", ".cfg", "", ".yaml.bak"])), text.encode()
    if kind == "deep":
        n = draw(st.integers(40, 3000))
        return (".json", ("{\"a\": " * n + "1" + "}" * n).encode()) if suffix != ".yaml" else \
            (".yaml", ("[" * n + "]" * n).encode())
    # exponentially many values once aliases are expanded
    lines = ["a0: &a0 [1, 2]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    return ".yaml", "\n".join(lines).encode()


@settings(FUZZ, max_examples=60)
@given(broken_file())
def test_malformed_and_non_utf8_config_files(tmp_path_factory, case):
    suffix, content = case
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as tmp:
        path = Path(tmp) / f"config{suffix}"
        path.write_bytes(content)
        code, err = run_main(["train", str(path), f"run_dir={Path(tmp) / 'never'}"])
        assert_one_line(code, err, (2,), path.name)
        assert not (Path(tmp) / "never").exists()


# -- damaged run directories -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One real, finished run with two checkpoints (steps 50 and 100), made once."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    code, err = run_main(["train", *TINY, f"run_dir={run_dir}"])
    assert code == 0, err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_0000000050", "step_0000000100"]
    return run_dir


def _meta_keys(command: str) -> list[str]:
    """The meta.json keys a checkpoint is refused without, for ``command``."""
    return ["format", "sha256", "step"] + (list(HostState.META_TYPES) if command == "resume" else ["eval_round"])


@st.composite
def damage(draw, command: str):
    """A function damaging a copy of the tiny run so that ``command`` cannot use it, and what
    the error must name and the exit code it must give."""
    target = draw(st.sampled_from(["checkpoints", "config"] + (["progress"] if command == "resume" else [])))
    if target == "config":
        how = draw(st.sampled_from(["non-utf8", "truncated", "not-a-mapping", "bad-value", "unknown-key", "missing"]))
        cut, byte = draw(st.integers(0, 10**6)), draw(INVALID_UTF8)
        extra = draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), words, st.none()))
        needs, key, value = draw(bad_setting())
        unknown = draw(misspelled())

        def apply(d: Path):
            path = d / "config.json"
            text = path.read_bytes()
            if how == "non-utf8":
                path.write_bytes(text[: cut % len(text)] + byte + text[cut % len(text):])
            elif how == "truncated":
                path.write_bytes(text[: cut % (len(text) - 1)])  # at least "}\n" cut: never whole
            elif how == "not-a-mapping":
                path.write_text(json.dumps(extra))
            elif how in ("bad-value", "unknown-key"):
                cfg = json.loads(text)
                if how == "bad-value" and key in FREE_TEXT and isinstance(value, str):
                    value_ = [value]  # resume and eval do not create run_dir: another type
                else:
                    value_ = value
                cfg.update({**needs, key: value_} if how == "bad-value" else {unknown: 1})
                path.write_text(json.dumps(cfg))
            else:
                path.unlink()

        return apply, ("config.json",), 2
    if target == "progress":
        how = draw(st.sampled_from(["non-utf8", "header", "garbage", "missing"]))
        cut, byte, junk = draw(st.integers(0, 10**6)), draw(INVALID_UTF8), draw(words)

        def apply(d: Path):
            path = d / "progress.csv"
            text = path.read_bytes()
            header = text.split(b"\n")[0]
            if how == "non-utf8":
                path.write_bytes(text[: cut % len(text)] + byte + text[cut % len(text):])
            elif how == "header":
                path.write_bytes(header[: cut % len(header)] + b"\n" + text[len(header) + 1:])
            elif how == "garbage":
                path.write_text(junk + "\n1,2,3\n")
            else:
                path.unlink()

        return apply, ("progress.csv",), 1
    # every checkpoint damaged (a valid one would be resumed from)
    whole = draw(st.sampled_from(["each"] * 4 + ["folder-missing", "folder-empty", "folder-a-file"]))
    keys = _meta_keys(command)
    hows = draw(st.lists(st.tuples(
        st.sampled_from(["arrays-garbage", "arrays-truncated", "arrays-missing", "meta-garbage", "meta-truncated",
                         "meta-non-utf8", "meta-not-a-mapping", "meta-key-missing", "meta-key-mistyped"]),
        st.binary(max_size=64), st.integers(0, 10**6), st.sampled_from(keys)), min_size=2, max_size=2))

    def apply(d: Path):
        root = d / "checkpoints"
        if whole != "each":
            shutil.rmtree(root)
            if whole == "folder-empty":
                root.mkdir()
            elif whole == "folder-a-file":
                root.write_text("x")
            return
        for ckpt, (how, junk, cut, key) in zip(sorted(root.iterdir()), hows):
            arrays, meta = ckpt / "arrays.npz", ckpt / "meta.json"
            if how == "arrays-garbage":
                arrays.write_bytes(junk)
            elif how == "arrays-truncated":
                arrays.write_bytes(arrays.read_bytes()[: cut % arrays.stat().st_size])
            elif how == "arrays-missing":
                arrays.unlink()
            elif how == "meta-garbage":
                meta.write_bytes(junk + b"{")
            elif how == "meta-truncated":
                meta.write_bytes(meta.read_bytes()[: cut % meta.stat().st_size])
            elif how == "meta-non-utf8":
                meta.write_bytes(b"\xff" + meta.read_bytes())
            elif how == "meta-not-a-mapping":
                meta.write_text(json.dumps([1, 2]))
            else:
                m = json.loads(meta.read_text())
                if how == "meta-key-missing":
                    del m[key]
                else:
                    m[key] = "0" * 64 if key == "sha256" else ("x" if key != "phase_metrics" else [1])
                meta.write_text(json.dumps(m))

    return apply, ("checkpoint",), 1


@st.composite
def damaged_case(draw):
    command = draw(st.sampled_from(["resume", "eval"]))
    return (command, *draw(damage(command)))


@settings(FUZZ, max_examples=80)
@given(damaged_case())
def test_damaged_run_directories_for_resume_and_eval(tiny_run, tmp_path_factory, case):
    command, apply, names, code_expected = case
    with tempfile.TemporaryDirectory(dir=tmp_path_factory.getbasetemp()) as tmp:
        d = Path(tmp) / "run"
        shutil.copytree(tiny_run, d)
        apply(d)
        before = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
        code, err = run_main([command, str(d)])
        assert_one_line(code, err, (code_expected,), *names)
        assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == before  # nothing written


@st.composite
def bad_command_line(draw) -> list[str]:
    """Command lines argparse refuses (never 'envs' or a bare 'train', which are valid)."""
    return draw(st.one_of(
        st.just([]),
        words.map(lambda w: [w]),
        st.sampled_from(["train", "resume", "eval", "compare", "envs"]).flatmap(
            lambda c: words.map(lambda w: [c, f"--{w}"])),
        st.sampled_from([["resume"], ["eval"], ["resume", "a", "b"]]),
        non_numeric.map(lambda x: ["eval", "runs/x", "--episodes", x]),
        st.integers(max_value=0).map(lambda n: ["eval", "runs/x", f"--episodes={n}"]),
    ))


@settings(FUZZ, max_examples=40)
@given(bad_command_line())
def test_bad_command_lines(argv):
    code, err = run_main(argv)
    assert_one_line(code, err, (2,))


@settings(FUZZ, max_examples=12)
@given(st.one_of(
    st.integers(10**13, 10**15).map(lambda n: {"buffer_size": n}),
    st.tuples(st.integers(10**12, 10**13), st.integers(2, 8)).map(lambda t: {"buffer_size": t[0], "seeds": t[1]}),
    st.integers(10**6, 10**7).map(lambda n: {"model": "mbpo", "model.rollout_batch": n, "model.max_length": 1000,
                                             "model.retain_epochs": 1000}),
))
def test_runs_beyond_the_memory_fail_before_allocating(tmp_path_factory, sizes):
    """A state of petabytes: one line naming the setting behind it, with the bytes needed and
    available, before anything is allocated or written."""
    run_dir = tmp_path_factory.getbasetemp() / "never"
    key = "model.buffer_rows" if "model" in sizes else "buffer_size"
    code, err = run_main(["train", *(f"{k}={v}" for k, v in sizes.items()), f"run_dir={run_dir}"])
    line = assert_one_line(code, err, (2,), key)
    needed, available = (int(re.search(rf"{w} (\d+) bytes", line).group(1)) for w in ("needs", "but"))
    assert needed > available > 0
    assert not run_dir.exists()


# -- the memory estimate and evaluation on a bounded pool, on real runs ---------------------------

def test_the_memory_estimate_is_the_state_init_allocates(tmp_path):
    """memory_needs is exact: the bytes of the state the learner allocates, for all seeds; the
    replay part is the documented row size (Pendulum: 3 obs, 1 action) times the capacity."""
    cfg = from_flat({"env": "Pendulum-v1", "seeds": 3, "buffer_size": 1000, "agent.hidden_sizes": [8, 8],
                     "replay": "per"})
    trainer = Trainer(cfg, tmp_path)
    needs = api.memory_needs(trainer)
    state = trainer.learner.init(cfg.seed_list)
    import jax

    allocated = sum(x.nbytes for x in jax.tree.leaves(state))
    assert sum(v for k, v in needs.items() if k != "eval_episodes") == allocated
    storage = sum(x.nbytes for x in jax.tree.leaves(state.storage))
    assert storage == 3 * (1000 * (4 * (2 * 3 + 1 + 1) + 1 + 8) + 8)
    assert needs["buffer_size"] == storage + sum(x.nbytes for x in jax.tree.leaves(state.sampler))
    assert needs["eval_episodes"] == 3 * cfg.eval_episodes * 33


def test_buffer_size_beyond_memory_through_the_real_cli(tmp_path):
    r = cli("train", "buffer_size=1000000000000", f"run_dir={tmp_path / 'run'}", timeout=120)
    line = assert_one_line(r.returncode, r.stderr, (2,), "buffer_size=1000000000000")
    assert "bytes" in line and "available" in line and not (tmp_path / "run").exists()


def test_damaged_config_through_the_real_cli(tiny_run, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(tiny_run, d)
    (d / "config.json").write_bytes(b"\xff\xfe{")
    r = cli("resume", str(d), timeout=120)
    assert "not UTF-8" in assert_one_line(r.returncode, r.stderr, (2,), "config.json")


def test_many_evaluation_episodes_run_in_waves_on_a_bounded_pool(tiny_run):
    """eval_episodes beyond the pool: EVAL_ENVS environments, reused; the first episodes are
    the ones an evaluation of that many episodes gives (seeds per episode, not per env)."""
    cfg = api.load_run_config(tiny_run).replace(eval_episodes=EVAL_ENVS + 5)
    trainer = Trainer(cfg, tiny_run)
    assert len(trainer.eval_envs) == 1 and len(trainer.eval_envs[0]) == EVAL_ENVS
    assert pool_width(4, 10_000) == EVAL_ENVS // 4 and pool_width(256, 10) == 1 and pool_width(2, 3) == 3
    many = api.evaluate(tiny_run, episodes=EVAL_ENVS + 5)
    few = api.evaluate(tiny_run, episodes=EVAL_ENVS)
    assert many.shape == (1, EVAL_ENVS + 5, 1) and np.isfinite(many).all()
    np.testing.assert_array_equal(many[:, :EVAL_ENVS], few)
    assert len(np.unique(many)) == EVAL_ENVS + 5  # every episode its own reset seed
