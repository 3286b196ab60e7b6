"""Typed, validated run configuration.

A run is described by one flat mapping of keys to values. Agent hyper-parameters live
under ``agent.*`` and the replay method's parameters under ``replay.*``, so a config
file, ``key=value`` overrides on the command line and the ``config.json`` a run writes
all have the same shape and round-trip into each other.

Every user mistake becomes a :class:`ConfigError` whose message is one line naming the
key, the value and what is allowed. Every integer has an upper bound (``UPPER_BOUNDS``),
and a config file is read as plain data whatever it holds (``load_file``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from replaylab.agents.config import AgentConfig
from replaylab.envs import check_env_id, is_meta, make_env
from replaylab.errors import ConfigError, one_line
from replaylab.envs.termination import RULES, termination_rule
from replaylab.inference import INFERENCES
from replaylab.models import MODELS
from replaylab.params import opt
from replaylab.replay.methods import HINDSIGHT, RELABELS, SAMPLERS


_opt = opt


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run."""

    env: str = _opt("Pendulum-v1", "Gymnasium id (Box actions), dmc:DOMAIN-TASK or meta:NAME (replaylab envs)")
    agent: str = _opt("sac", "learning algorithm", choices=("sac", "dsac", "td3", "ddpg"))
    replay: str = _opt("uniform", "replay method (replay.* sets its parameters)", choices=tuple(SAMPLERS))
    relabel: str = _opt("none", "trajectory relabelling on a task distribution: hfr stores each training "
                                "episode again, relabelled for another train task (relabel.* sets its parameters)",
                        choices=tuple(RELABELS))
    her: str = _opt("none", "hindsight experience replay on a goal env (Fetch, Hand): the goal strategy "
                            "(her.* sets its parameters)", choices=tuple(HINDSIGHT))
    model: str = _opt("none", "model-generated data: mbpo fits a dynamics ensemble and mixes its rollouts into "
                              "every batch (model.* sets its parameters)", choices=tuple(MODELS))
    inference: str = _opt("none", "task inference on a meta: env (inference.* sets its parameters)",
                          choices=tuple(INFERENCES))
    seed: int = _opt(0, "first seed; seeds are seed, seed+1, ...", min=0)
    seeds: int = _opt(1, "seeds trained at once (a vmapped axis)", min=1)
    total_steps: int = _opt(100_000, "environment steps per seed", min=1)
    warmup_steps: int = _opt(10_000, "uniformly random steps before learning", min=0)
    replay_ratio: int = _opt(1, "gradient updates per update call (per environment step by default)", min=1)
    update_every: int = _opt(1, "environment steps between update calls (PEARL: the steps of an iteration)",
                             min=1)
    batch_size: int = _opt(256, "minibatch size", min=1)
    buffer_size: int = _opt(1_000_000, "replay capacity per seed (transitions)", min=1)
    eval_interval: int = _opt(5_000, "environment steps between evaluations", min=1)
    eval_episodes: int = _opt(10, "deterministic-policy episodes per evaluation and seed", min=1)
    checkpoint_interval: int = _opt(50_000, "environment steps between checkpoints (0: only at the end)", min=0)
    reset_interval: int = _opt(0, "gradient updates between network resets (0: never)", min=0)
    reset_layers: int = _opt(0, "reset only the last k layers of each network (0: all)", min=0)
    action_repeat: int = _opt(1, "repeat each action this many env steps", min=1)
    run_dir: str = _opt("", "output directory (default runs/ENV-AGENT-REPLAY-TIME)")
    tensorboard: bool = _opt(True, "write TensorBoard event files")
    wandb: bool = _opt(False, "log to Weights & Biases")
    wandb_mode: str = _opt("offline", "wandb mode", choices=("offline", "online", "disabled"))
    wandb_project: str = _opt("replaylab", "wandb project")
    progress_bar: bool = _opt(True, "show a progress bar on the console")
    # task distributions only (env=meta:NAME); null: the default in brackets or the family's
    meta_batch: int | None = _opt(None, "tasks per meta batch, batch_size transitions each [16]", min=1)
    train_tasks: int | None = _opt(None, "train tasks [the family's]", min=1)
    test_tasks: int | None = _opt(None, "test tasks, disjoint from the train tasks [the family's]", min=1)
    episode_length: int | None = _opt(None, "steps per episode [the family's]", min=1)
    change_steps: int | None = _opt(None, "steps before the task may switch inside an episode (0: never) [0]",
                                    min=0)
    change_prob: float | None = _opt(None, "per-step probability of a switch once change_steps passed [1]",
                                     min=0.0, max=1.0)
    prior_episodes: int | None = _opt(None, "episodes of a task visit (and of an adaptation) acting with z "
                                            "from the prior [2]", min=0)
    posterior_episodes: int | None = _opt(None, "further episodes with z from the posterior, used as "
                                                "context [0]", min=0)
    extra_episodes: int | None = _opt(None, "further episodes with z from the posterior, for RL only [2]",
                                      min=0)
    adapt_episodes: int | None = _opt(None, "episodes per task in the adaptation evaluation [3]", min=1)
    eval_train_tasks: int | None = _opt(None, "train tasks also evaluated (test tasks always are) [5]", min=0)
    agent_cfg: AgentConfig = field(default_factory=AgentConfig)
    replay_cfg: Mapping[str, Any] = field(default_factory=dict)
    inference_cfg: Mapping[str, Any] = field(default_factory=dict)
    relabel_cfg: Mapping[str, Any] = field(default_factory=dict)
    her_cfg: Mapping[str, Any] = field(default_factory=dict)
    model_cfg: Mapping[str, Any] = field(default_factory=dict)

    # -- derived ----------------------------------------------------------------
    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

    @property
    def is_meta(self) -> bool:
        return is_meta(self.env)

    def make_env(self, render: bool = False):
        return make_env(self.env, self.action_repeat, render, num_train=self.train_tasks, num_test=self.test_tasks,
                        episode_length=self.episode_length, change_steps=self.change_steps,
                        change_prob=self.change_prob)

    @property
    def policy_delay(self) -> int:
        pd = self.agent_cfg.policy_delay
        return pd if pd is not None else (2 if self.agent == "td3" else 1)

    def to_flat(self) -> dict[str, Any]:
        """The flat key/value form; ``from_flat(to_flat())`` gives the same config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "agent_cfg":
                for g in dataclasses.fields(AgentConfig):
                    out[f"agent.{g.name}"] = _jsonable(getattr(self.agent_cfg, g.name))
            elif f.name.endswith("_cfg"):  # a method's parameters: KIND.NAME
                prefix = f.name[: -len("_cfg")]
                for k, v in sorted(getattr(self, f.name).items()):
                    out[f"{prefix}.{k}"] = _jsonable(v)
            else:
                out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def replace(self, **changes) -> "Config":
        return from_flat({**self.to_flat(), **changes})


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


# -- parsing and validation ------------------------------------------------------

TOP_FIELDS = {f.name: f for f in dataclasses.fields(Config) if not f.name.endswith("_cfg")}
# the settings that pick a method from a registry; ``KIND.PARAM`` keys set its parameters (``KIND_cfg``)
METHOD_KINDS: dict[str, Mapping[str, type]] = {"replay": SAMPLERS, "inference": INFERENCES, "relabel": RELABELS,
                                               "her": HINDSIGHT, "model": MODELS}
AGENT_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}
META_DEFAULTS = dict(meta_batch=16, change_steps=0, change_prob=1.0, prior_episodes=2, posterior_episodes=0,
                     extra_episodes=2, adapt_episodes=3, eval_train_tasks=5)
META_KEYS = tuple(META_DEFAULTS) + ("train_tasks", "test_tasks", "episode_length")

# Upper bounds of the integer settings, all in one place (a bound declared on a field wins).
# Far beyond any legitimate run, they turn a slip (seeds=3000, agent.hidden_sizes=[10**7])
# into one line here instead of a hang or an exhausted memory later. Replay capacities
# (buffer_size, model.buffer_rows) are sized by the memory check before anything is
# allocated (``api.check_memory``, which knows the row size); their bound here only keeps
# the arithmetic in range.
STEPS_MAX = 10**9  # every integer not listed: counts of steps, updates, epochs and intervals
WIDTH_MAX = 16_384  # units of a hidden layer
LIST_MAX = 64  # entries of a list of layer widths; also layer counts
UPPER_BOUNDS: dict[str, int] = {
    # the run
    "seed": 10**9, "seeds": 256, "replay_ratio": 1024, "batch_size": 2**20, "buffer_size": 10**15,
    "eval_episodes": 10_000, "action_repeat": 1000,
    # task distributions
    "meta_batch": 10_000, "train_tasks": 10_000, "test_tasks": 10_000, "eval_train_tasks": 10_000,
    "episode_length": 100_000, "prior_episodes": 1000, "posterior_episodes": 1000, "extra_episodes": 1000,
    "adapt_episodes": 1000,
    # networks
    "agent.hidden_sizes": WIDTH_MAX, "agent.num_critics": 128, "agent.policy_delay": 1000,
    "agent.num_quantiles": 1024, "agent.quantile_embedding": 4096,
    "inference.encoder_sizes": WIDTH_MAX, "inference.decoder_sizes": WIDTH_MAX, "inference.gru_hidden": WIDTH_MAX,
    "inference.gru_layers": LIST_MAX, "inference.latent_dim": 1024, "inference.num_classes": 1024,
    "inference.latent_samples": 1024, "inference.targets": 1024, "inference.context_size": 10_000,
    "inference.encoder_batch": 2**20, "inference.relabel_chunk": 2**20,
    "model.ensemble": 128, "model.elites": 128, "model.hidden": WIDTH_MAX, "model.layers": LIST_MAX,
    "model.model_batch": 2**20, "model.max_holdout": 10**7, "model.rollout_batch": 10**7, "model.min_length": 1000,
    "model.max_length": 1000, "model.retain_epochs": 1000, "model.buffer_rows": 10**15,
    # replay methods and relabelling
    "replay.k": 1024, "replay.window": 2**20, "replay.probes": 1024, "replay.cluster_size": 2**24,
    "replay.kmeans_points": 2**24, "replay.kmeans_iters": 1000, "replay.clusters": 2**20, "replay.fit_hoods": 2**16,
    "replay.fit_steps": 10**6, "relabel.utility_batch": 2**16, "relabel.log_z_draws": 10**6, "her.k": 1000,
}
# what a config file may hold: nesting depth and values visited (YAML aliases are counted
# each time they are used, so a self-referencing or exponentially aliased file is refused)
FILE_DEPTH_MAX, FILE_NODES_MAX = 32, 100_000


def _bounds(key: str, f: dataclasses.Field) -> tuple[Any, Any, bool]:
    """(min, max, whether max is declared on the field) of a setting; integers (and the
    entries of integer lists) always have a max, from the field or ``UPPER_BOUNDS``."""
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if hi is not None or "int" not in str(f.type):
        return lo, hi, True
    return lo, UPPER_BOUNDS.get(key, STEPS_MAX), False


def _describe(f: dataclasses.Field, key: str, full: bool = False) -> str:
    """What a setting takes. The upper bound of an integer is named where it was declared on
    the field, with ``full`` (the help, and a value above it), else only its lower bound."""
    t = str(f.type)
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(m["choices"])
    base = t.replace(" | None", "")
    kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "tuple[int, ...]": "a list of integers"}.get(base, base)
    lo, hi, declared = _bounds(key, f)
    if not (declared or full):
        hi = None
    if base == "tuple[int, ...]" and hi is not None:
        kind = f"a list of 1 to {LIST_MAX} integers"
    if lo is not None and hi is not None:
        kind = f"{kind} in [{lo}, {hi}]"
    elif lo is not None:
        kind = f"{kind} >= {lo}"
    return kind + (" or null" if t != base else "")


def _number(text: str):
    """``text`` as a number if it reads as one, else unchanged (and rejected by the caller)."""
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Convert ``value`` to the field's type or raise a one-line ConfigError."""
    t = str(f.type)
    m = f.metadata
    bad = ConfigError(f"{key}={show_value(value)}: expected {_describe(f, key)}")
    too_big = ConfigError(f"{key}={show_value(value)}: expected {_describe(f, key, full=True)}")
    lo, hi, _ = _bounds(key, f)
    if value is None:
        if "None" in t:
            return None
        raise bad
    base = t.replace(" | None", "")
    if base in ("int", "float") and isinstance(value, str):
        value = _number(value)  # YAML reads 1e-3 (no dot) as a string
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if base == "int":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not _is_int(value):
            raise bad
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        try:
            value = float(value)
        except OverflowError:  # an integer beyond any float
            raise bad from None
        if not math.isfinite(value):
            raise bad
    elif base == "str":
        if not isinstance(value, str):
            raise bad
    elif base == "tuple[int, ...]":
        if _is_int(value):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(_is_int(x) for x in value):
            raise bad
        if lo is not None and min(value) < lo:
            raise bad
        if len(value) > LIST_MAX or max(value) > hi:
            raise too_big
        return tuple(value)
    if m.get("choices") and value not in m["choices"]:
        raise bad
    if lo is not None and value < lo:
        raise bad
    if hi is not None and value > hi:
        raise too_big
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def show_value(v: Any) -> str:
    """A value as a user typed it in an error message: strings bare, everything else as JSON
    (dates and other types JSON lacks as text); one printable line of at most 200 characters."""
    if not isinstance(v, str):
        try:
            v = json.dumps(v, default=str)
        except (ValueError, RecursionError):  # an integer of thousands of digits, a self-referencing list
            v = f"<{type(v).__name__}>"
    return one_line(v, 200)


def parse_value(text: str) -> Any:
    """Parse a command-line value: numbers, booleans, null and [lists] as YAML, else a string
    (also where YAML fails: a bad date, an integer of thousands of digits, deep nesting)."""
    try:
        return yaml.safe_load(text) if text.strip() != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        return text


def _unknown(key: str) -> ConfigError:
    known = list(TOP_FIELDS) + [f"agent.{k}" for k in AGENT_FIELDS] + [f"{kind}.<param>" for kind in METHOD_KINDS]
    close = difflib.get_close_matches(key[:200], known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; run 'replaylab train --help' for the keys"
    return ConfigError(f"unknown key '{one_line(key, 200)}'{hint}")


def flatten(d: Mapping[str, Any], prefix: str = "", keep_empty: bool = False) -> dict[str, Any]:
    """Nested mappings become dotted keys: {'agent': {'gamma': .9}} -> {'agent.gamma': .9}.
    An empty mapping vanishes, or with ``keep_empty`` stays as ``{key: {}}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and (v or not keep_empty):
            out.update(flatten(v, key + ".", keep_empty))
        else:
            out[key] = v
    return out


def from_flat(flat: Mapping[str, Any]) -> Config:
    """Build and validate a Config from dotted keys (values already parsed)."""
    if not isinstance(flat, Mapping):
        raise ConfigError(f"expected a mapping of keys to values, got {type(flat).__name__}")
    top, agent = {}, {}
    given: dict[str, dict] = {kind: {} for kind in METHOD_KINDS}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"{show_value(key)}: keys must be strings")
        if key.startswith("agent."):
            name = key[len("agent."):]
            if name not in AGENT_FIELDS:
                raise _unknown(key)
            agent[name] = _coerce(key, value, AGENT_FIELDS[name])
        elif key.partition(".")[0] in METHOD_KINDS and "." in key:
            kind, _, name = key.partition(".")
            given[kind][name] = value
        elif key in TOP_FIELDS:
            top[key] = _coerce(key, value, TOP_FIELDS[key])
        elif key in ("replaylab_version", "git_commit"):
            continue  # provenance written into config.json, not settings
        else:
            raise _unknown(key)
    if agent.get("hidden_sizes") is None:
        agent["hidden_sizes"] = (300, 300, 300) if is_meta(top.get("env", "")) else (256, 256)
    methods = {f"{kind}_cfg": _method_params(kind, top.get(kind, TOP_FIELDS[kind].default), params)
               for kind, params in given.items()}  # the method was validated with the top-level keys
    cfg = _with_defaults(Config(**top, agent_cfg=AgentConfig(**agent), **methods))
    _check_consistency(cfg)
    return cfg


def _method_params(kind: str, method: str, given: dict) -> dict:
    """Validate ``kind.NAME`` keys against the chosen method's parameters."""
    params = METHOD_KINDS[kind][method].params()
    for name in list(given):
        if name not in params:
            allowed = ", ".join(f"{kind}.{p}" for p in params) or "no parameters"
            raise ConfigError(f"unknown key '{one_line(kind + '.' + name, 200)}': {kind}={method} takes {allowed}")
        given[name] = _coerce(f"{kind}.{name}", given[name], params[name])
    return given


def _with_defaults(cfg: Config) -> Config:
    """Fill the task-distribution settings whose default depends on the family."""
    if not cfg.is_meta:
        return cfg
    from replaylab.envs.meta import FAMILIES

    family = FAMILIES.get(cfg.env.split(":", 1)[1])
    if family is None:  # _check_consistency names the env
        return cfg
    family_defaults = dict(train_tasks=family.num_train, test_tasks=family.num_test,
                           episode_length=family.episode_length)
    fills = {k: v for k, v in {**META_DEFAULTS, **INFERENCES[cfg.inference].meta_defaults, **family_defaults}.items()
             if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **fills)


def _check_consistency(cfg: Config) -> None:
    if cfg.reset_layers > len(cfg.agent_cfg.hidden_sizes) + 1:
        raise ConfigError(
            f"reset_layers={cfg.reset_layers}: expected at most {len(cfg.agent_cfg.hidden_sizes) + 1} "
            "(the number of Dense layers per network)")
    goal_env = check_env_id(cfg.env, cfg.action_repeat)
    if cfg.model != "none":
        _check_model(cfg, goal_env)
    if goal_env and not SAMPLERS[cfg.replay].goal_ready:
        ready = ", ".join(m for m, c in SAMPLERS.items() if c.goal_ready)
        raise ConfigError(f"replay={cfg.replay}: not available on goal envs (its synthetic s' has no matching "
                          f"achieved goal to recompute the reward from); use one of {ready}")
    if not goal_env and cfg.her != "none":
        raise ConfigError(f"her={cfg.her}: needs a goal env (a dict observation with achieved and desired goals, "
                          f"e.g. FetchReach-v4); env={cfg.env} has no goal")
    if not cfg.is_meta:
        for key in META_KEYS:
            if getattr(cfg, key) is not None:
                raise ConfigError(f"{key}={show_value(getattr(cfg, key))}: only for task distributions "
                                  f"(env=meta:NAME); env={cfg.env} is a single task")
        for key in ("inference", "relabel"):
            if getattr(cfg, key) != "none":
                raise ConfigError(f"{key}={getattr(cfg, key)}: needs a task distribution (env=meta:NAME); "
                                  f"env={cfg.env} is a single task")
        return
    if cfg.relabel != "none":
        _check_relabel(cfg)
    if not SAMPLERS[cfg.replay].multi_task_ready:
        ready = ", ".join(m for m, c in SAMPLERS.items() if c.multi_task_ready)
        raise ConfigError(f"replay={cfg.replay}: not available on task distributions yet (its index mixes "
                          f"tasks); use one of {ready}")
    episodes = cfg.prior_episodes + cfg.posterior_episodes + cfg.extra_episodes
    if episodes < 1:
        raise ConfigError("prior_episodes + posterior_episodes + extra_episodes: expected at least 1 episode "
                          f"per task visit, got {episodes}")
    if INFERENCES[cfg.inference].split_batch and (cfg.batch_size % cfg.meta_batch or cfg.batch_size < cfg.meta_batch):
        raise ConfigError(f"batch_size={cfg.batch_size}: with inference={cfg.inference} a batch is batch_size rows "
                          f"spread evenly over meta_batch={cfg.meta_batch} tasks; expected a multiple of meta_batch")
    cfg.make_env().close()  # the family checks its counts and switch settings


def _check_model(cfg: Config, goal_env: bool) -> None:
    name = f"model={cfg.model}"
    if cfg.is_meta or goal_env:
        raise ConfigError(f"{name}: needs a single-task env without goals (its models predict the observation); "
                          f"env={cfg.env} is a {'task distribution' if cfg.is_meta else 'goal env'}")
    if termination_rule(cfg.env) is None:
        raise ConfigError(f"{name}: env={cfg.env} has no known termination rule for model rollouts; expected "
                          f"one of {', '.join(RULES)} (MuJoCo -v4/-v5; Pendulum-v1)")
    p = vars(MODELS[cfg.model](**cfg.model_cfg))  # the settings, defaults filled
    if p["elites"] > p["ensemble"]:
        raise ConfigError(f"model.elites={p['elites']}: expected at most model.ensemble={p['ensemble']}")
    for lo, hi in (("min_length", "max_length"), ("min_epoch", "max_epoch")):
        if p[lo] > p[hi]:
            raise ConfigError(f"model.{lo}={p[lo]}: expected at most model.{hi}={p[hi]}")
    if p["buffer_rows"] and p["buffer_rows"] < p["rollout_batch"]:
        raise ConfigError(f"model.buffer_rows={p['buffer_rows']}: expected 0 (auto) or at least "
                          f"model.rollout_batch={p['rollout_batch']} (one rollout step must fit)")


def _check_relabel(cfg: Config) -> None:
    from replaylab.envs.meta import FAMILIES

    if not INFERENCES[cfg.inference].encodes_trajectories:
        able = ", ".join(name for name, m in INFERENCES.items() if m.encodes_trajectories)
        raise ConfigError(f"relabel={cfg.relabel}: inference={cfg.inference} is not supported (a trajectory has no "
                          f"encoding of its own to choose a task by); use {able}")
    if FAMILIES[cfg.env.split(":", 1)[1]].make.terminates:  # the env id was checked before
        fixed = ", ".join(f.name for f in FAMILIES.values() if not f.make.terminates)
        raise ConfigError(f"relabel={cfg.relabel}: env={cfg.env} can end episodes early, and relabelling needs "
                          f"fixed-length episodes; families that never terminate: {fixed}")


def load_file(path: str | Path, keep_empty: bool = False) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into flat dotted keys (see :func:`flatten`).
    Whatever the file holds, a failure is a one-line ConfigError naming it; YAML is read
    with the safe loader (plain data, no Python objects)."""
    p = Path(path)
    name = f"config file '{one_line(path, 300)}'"
    if not p.is_file():
        raise ConfigError(f"{name}: no such file")
    if p.suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise ConfigError(f"{name}: expected a .yaml, .yml, .toml or .json file")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{name}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
            data = {} if data is None else data
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: JSON, TOML, YAML's dates and ints
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{name}: cannot parse: {first}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: expected a mapping of keys to values, got {type(data).__name__}")
    _check_size(data, name)
    return flatten(data, keep_empty=keep_empty)


def _check_size(data: Any, name: str) -> None:
    """Refuse a file nested deeper than FILE_DEPTH_MAX or with more than FILE_NODES_MAX
    values, counting a YAML alias each time it is used (a self-referencing anchor, or
    aliases of aliases that would expand exponentially)."""
    stack, nodes = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > FILE_DEPTH_MAX or nodes > FILE_NODES_MAX:
            raise ConfigError(f"{name}: nested deeper than {FILE_DEPTH_MAX} levels or more than {FILE_NODES_MAX} "
                              "values (a self-referencing YAML anchor?)")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"'{item}': expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def resolve(config_file: str | None = None, overrides: list[str] | Mapping[str, Any] = ()) -> Config:
    flat = load_file(config_file) if config_file else {}
    flat.update(parse_overrides(list(overrides)) if not isinstance(overrides, Mapping) else overrides)
    return from_flat(flat)


def help_table() -> str:
    """Every key with its default and what it takes, for ``--help``."""
    lines = []
    defaults = Config().to_flat()
    for name, f in TOP_FIELDS.items():
        lines.append(f"  {name:<22} {show_value(defaults[name]):<14} {f.metadata['help']} "
                     f"({_describe(f, name, full=True)})")
    for name, f in AGENT_FIELDS.items():
        only = f" [{', '.join(f.metadata['agents'])}]" if f.metadata.get("agents") else ""
        key = f"agent.{name}"
        lines.append(f"  {key:<22} {show_value(defaults[key]):<14} {f.metadata['help']}{only} "
                     f"({_describe(f, key, full=True)})")
    for kind, registry in METHOD_KINDS.items():
        shared: dict[tuple, list[str]] = {}  # a parameter several methods share is listed once
        for method, cls in registry.items():
            for name, f in cls.params().items():
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                shared.setdefault((f"{kind}.{name}", show_value(_jsonable(default)), f.metadata["help"],
                                   _describe(f, f"{kind}.{name}", full=True)), []).append(method)
        for (key, default, text, kind_of), methods in shared.items():
            lines.append(f"  {key:<22} {default:<14} {text} [{', '.join(methods)}] ({kind_of})")
    return "\n".join(lines)


__all__ = ["AgentConfig", "Config", "ConfigError", "from_flat", "resolve", "load_file", "help_table"]
