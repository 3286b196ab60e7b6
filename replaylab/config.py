"""Typed, validated run configuration.

A run is described by one flat mapping of keys to values. Agent hyper-parameters live
under ``agent.*`` and the replay method's parameters under ``replay.*``, so a config
file, ``key=value`` overrides on the command line and the ``config.json`` a run writes
all have the same shape and round-trip into each other.

Every user mistake becomes a :class:`ConfigError` whose message is one line naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from replaylab.envs import check_env_id
from replaylab.errors import ConfigError
from replaylab.params import opt
from replaylab.replay.methods import SAMPLERS, sampler_params


_opt = opt


ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu")


@dataclass(frozen=True)
class AgentConfig:
    """Network and optimisation settings shared by SAC, TD3 and DDPG (``agent.*``)."""

    hidden_sizes: tuple[int, ...] = _opt((256, 256), "hidden layer widths of every MLP", min=1)
    activation: str = _opt("relu", "hidden activation", choices=ACTIVATIONS)
    layer_norm: bool = _opt(False, "LayerNorm after each hidden Dense layer")
    actor_lr: float = _opt(3e-4, "actor Adam learning rate", min=0.0)
    critic_lr: float = _opt(3e-4, "critic Adam learning rate", min=0.0)
    gamma: float = _opt(0.99, "discount factor", min=0.0, max=1.0)
    tau: float = _opt(0.005, "Polyak rate of the target networks", min=0.0, max=1.0)
    num_critics: int = _opt(2, "critics in the ensemble (SAC/TD3 take the min; DDPG uses 1)", min=1)
    init_temperature: float = _opt(1.0, "initial entropy temperature", min=0.0, agents=("sac",))
    temperature_lr: float = _opt(3e-4, "temperature Adam learning rate", min=0.0, agents=("sac",))
    target_entropy: float | None = _opt(None, "entropy target; null means -|A|", agents=("sac",))
    policy_delay: int | None = _opt(None, "critic updates per actor update; null: TD3 2, others 1", min=1)
    exploration_noise: float = _opt(0.1, "Gaussian action noise while acting", min=0.0, agents=("td3", "ddpg"))
    target_noise: float = _opt(0.2, "target policy smoothing noise", min=0.0, agents=("td3",))
    target_noise_clip: float = _opt(0.5, "clip of the target smoothing noise", min=0.0, agents=("td3",))


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run."""

    env: str = _opt("Pendulum-v1", "Gymnasium id (Box actions) or dmc:DOMAIN-TASK")
    agent: str = _opt("sac", "learning algorithm", choices=("sac", "td3", "ddpg"))
    replay: str = _opt("uniform", "replay method (replay.* sets its parameters)", choices=tuple(SAMPLERS))
    seed: int = _opt(0, "first seed; seeds are seed, seed+1, ...", min=0)
    seeds: int = _opt(1, "seeds trained at once (a vmapped axis)", min=1)
    total_steps: int = _opt(100_000, "environment steps per seed", min=1)
    warmup_steps: int = _opt(10_000, "uniformly random steps before learning", min=0)
    replay_ratio: int = _opt(1, "gradient updates per environment step", min=1)
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
    agent_cfg: AgentConfig = field(default_factory=AgentConfig)
    replay_cfg: Mapping[str, Any] = field(default_factory=dict)

    # -- derived ----------------------------------------------------------------
    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds)]

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
            elif f.name == "replay_cfg":
                for k, v in sorted(self.replay_cfg.items()):
                    out[f"replay.{k}"] = _jsonable(v)
            else:
                out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def replace(self, **changes) -> "Config":
        return from_flat({**self.to_flat(), **changes})


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


# -- parsing and validation ------------------------------------------------------

TOP_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.name not in ("agent_cfg", "replay_cfg")}
AGENT_FIELDS = {f.name: f for f in dataclasses.fields(AgentConfig)}


def _describe(f: dataclasses.Field) -> str:
    t = f.type if not isinstance(f.type, str) else f.type
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(m["choices"])
    kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "tuple[int, ...]": "a list of integers", "float | None": "a number or null",
            "int | None": "an integer or null"}.get(str(t), str(t))
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    return kind


def _coerce(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Convert ``value`` to the field's type or raise a one-line ConfigError."""
    t = str(f.type)
    m = f.metadata
    bad = ConfigError(f"{key}={show_value(value)}: expected {_describe(f)}")
    if value is None:
        if "None" in t:
            return None
        raise bad
    base = t.replace(" | None", "")
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        value = int(value)
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif base == "str":
        if not isinstance(value, str):
            raise bad
    elif base == "tuple[int, ...]":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in value
        ):
            raise bad
        if m.get("min") is not None and min(value) < m["min"]:
            raise bad
        return tuple(value)
    if m.get("choices") and value not in m["choices"]:
        raise bad
    if m.get("min") is not None and value < m["min"]:
        raise bad
    if m.get("max") is not None and value > m["max"]:
        raise bad
    return value


def show_value(v: Any) -> str:
    """A value as a user typed it in an error message: strings bare, everything else as JSON."""
    return json.dumps(v) if not isinstance(v, str) else v


def parse_value(text: str) -> Any:
    """Parse a command-line value: numbers, booleans, null and [lists] as YAML, else a string."""
    try:
        return yaml.safe_load(text) if text.strip() != "" else ""
    except yaml.YAMLError:
        return text


def _unknown(key: str) -> ConfigError:
    known = list(TOP_FIELDS) + [f"agent.{k}" for k in AGENT_FIELDS] + ["replay.<param>"]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; run 'replaylab train --help' for the keys"
    return ConfigError(f"unknown key '{key}'{hint}")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted keys: {'agent': {'gamma': .9}} -> {'agent.gamma': .9}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def from_flat(flat: Mapping[str, Any]) -> Config:
    """Build and validate a Config from dotted keys (values already parsed)."""
    top, agent, replay = {}, {}, {}
    for key, value in flat.items():
        if not isinstance(key, str):
            raise ConfigError(f"{key!r}: keys must be strings")
        if key.startswith("agent."):
            name = key[len("agent."):]
            if name not in AGENT_FIELDS:
                raise _unknown(key)
            agent[name] = _coerce(key, value, AGENT_FIELDS[name])
        elif key.startswith("replay."):
            replay[key[len("replay."):]] = value
        elif key in TOP_FIELDS:
            top[key] = _coerce(key, value, TOP_FIELDS[key])
        elif key in ("replaylab_version", "git_commit"):
            continue  # provenance written into config.json, not settings
        else:
            raise _unknown(key)
    method = top.get("replay", "uniform")
    params = sampler_params(method)
    for name in list(replay):
        if name not in params:
            allowed = ", ".join(f"replay.{p}" for p in params) or "no parameters"
            raise ConfigError(f"unknown key 'replay.{name}': replay={method} takes {allowed}")
        replay[name] = _coerce(f"replay.{name}", replay[name], params[name])
    cfg = Config(**top, agent_cfg=AgentConfig(**agent), replay_cfg=replay)
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    if cfg.reset_layers > len(cfg.agent_cfg.hidden_sizes) + 1:
        raise ConfigError(
            f"reset_layers={cfg.reset_layers}: expected at most {len(cfg.agent_cfg.hidden_sizes) + 1} "
            "(the number of Dense layers per network)")
    check_env_id(cfg.env, cfg.action_repeat)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into flat dotted keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}': no such file")
    text = p.read_text()
    try:
        if p.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file '{path}': expected a .yaml, .yml, .toml or .json file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"config file '{path}': cannot parse: {first}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file '{path}': expected a mapping of keys to values")
    return flatten(data)


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
        lines.append(f"  {name:<22} {show_value(defaults[name]):<14} {f.metadata['help']} ({_describe(f)})")
    for name, f in AGENT_FIELDS.items():
        only = f" [{', '.join(f.metadata['agents'])}]" if f.metadata.get("agents") else ""
        key = f"agent.{name}"
        lines.append(f"  {key:<22} {show_value(defaults[key]):<14} {f.metadata['help']}{only} ({_describe(f)})")
    for method in SAMPLERS:
        for name, f in sampler_params(method).items():
            key = f"replay.{name}"
            lines.append(f"  {key:<22} {show_value(f.default):<14} {f.metadata['help']} [{method}] ({_describe(f)})")
    return "\n".join(lines)


__all__ = ["AgentConfig", "Config", "ConfigError", "from_flat", "resolve", "load_file", "help_table"]
