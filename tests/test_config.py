"""Config files, overrides and the one-line errors for bad input (real CLI subprocesses)."""

from __future__ import annotations

import json

import pytest

from replaylab.config import Config, ConfigError, flatten, from_flat, resolve
from tests.conftest import cli


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("replay_ratio=0", "replay_ratio=0: expected an integer >= 1"),
        ("replay_ratio=abc", "replay_ratio=abc: expected an integer >= 1"),
        ("seeds=2.5", "seeds=2.5: expected an integer >= 1"),
        ("total_steps=inf", "total_steps=inf: expected an integer >= 1"),
        ("agent.actor_lr=nan", "agent.actor_lr=nan: expected a number >= 0.0"),
        ("agent=ppo", "agent=ppo: expected one of sac, dsac, td3, ddpg"),
        ("agent.gamma=1.5", "agent.gamma=1.5: expected a number in [0.0, 1.0]"),
        ("agent.hidden_sizes=[64,x]", "agent.hidden_sizes=[64, \"x\"]: expected a list of integers >= 1"),
        ("replay_ration=8", "unknown key 'replay_ration'; did you mean 'replay_ratio'?"),
        ("agent.gama=0.9", "unknown key 'agent.gama'; did you mean 'agent.gamma'?"),
        ("env=CartPole-v1", "env=CartPole-v1: action space is Discrete(2); replaylab needs a continuous (Box)"),
        ("env=NoSuchEnv-v0", "env=NoSuchEnv-v0: not a Gymnasium id"),
        ("env=dmc:cheetah-fly", "env=dmc:cheetah-fly: not a dm_control suite task"),
        ("reset_layers=9", "reset_layers=9: expected at most 3"),
        ("replay.k=10", "unknown key 'replay.k': replay=uniform takes no parameters"),
        ("notakeyvalue", "'notakeyvalue': expected key=value"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(tmp_path, arg, expected):
    # a config file first, so that a bare word is parsed as an override, not a file name
    cfg = tmp_path / "c.yaml"
    cfg.write_text("total_steps: 10\n")
    r = cli("train", str(cfg), arg, f"run_dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("replaylab: error: ")
    assert expected in lines[0]
    assert not (tmp_path / "run").exists()


def test_numbers_in_exponent_form_are_numbers():
    # YAML 1.1 reads 1e-3 (no dot) as a string; settings take it as the number it spells
    cfg = from_flat({"agent.actor_lr": "1e-3", "total_steps": "2e4", "replay": "per", "replay.beta": "5E-1"})
    assert (cfg.agent_cfg.actor_lr, cfg.total_steps, cfg.replay_cfg["beta"]) == (1e-3, 20000, 0.5)
    assert isinstance(cfg.total_steps, int)


def test_missing_and_unparsable_config_files(tmp_path):
    r = cli("train", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("env = [unclosed\n")
    r = cli("train", str(bad))
    assert r.returncode == 2 and "cannot parse" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_yaml_toml_json_and_overrides_agree(tmp_path):
    (tmp_path / "a.yaml").write_text("env: Hopper-v5\nagent: td3\nagent.gamma: 0.9\n")
    (tmp_path / "a.toml").write_text('env = "Hopper-v5"\nagent = "td3"\n"agent.gamma" = 0.9\n')
    (tmp_path / "a.json").write_text(json.dumps({"env": "Hopper-v5", "agent": "td3", "agent.gamma": 0.9}))
    cfgs = [resolve(str(tmp_path / f"a.{ext}")) for ext in ("yaml", "toml", "json")]
    assert cfgs[0] == cfgs[1] == cfgs[2]
    assert cfgs[0].agent == "td3" and cfgs[0].agent_cfg.gamma == 0.9 and cfgs[0].policy_delay == 2
    over = resolve(str(tmp_path / "a.yaml"), ["agent.gamma=0.5", "seeds=3"])
    assert over.agent_cfg.gamma == 0.5 and over.seeds == 3


def test_nested_mappings_flatten():
    cfg = from_flat(flatten({"agent": {"gamma": 0.95, "hidden_sizes": [8, 8]}}))
    assert cfg.agent_cfg.gamma == 0.95 and cfg.agent_cfg.hidden_sizes == (8, 8)


def test_flat_round_trip():
    cfg = from_flat({"env": "dmc:cheetah-run", "agent.hidden_sizes": [32], "agent.target_entropy": -2.0})
    assert from_flat(json.loads(json.dumps(cfg.to_flat()))) == cfg
    assert isinstance(Config().replace(seeds=4), Config)


def test_help_lists_every_option_with_its_default():
    r = cli("train", "--help")
    assert r.returncode == 0
    for key, default in Config().to_flat().items():
        line = next((ln for ln in r.stdout.splitlines() if ln.strip().startswith(key + " ")), None)
        assert line is not None, key
        shown = json.dumps(default) if not isinstance(default, str) else default
        assert shown in line, (key, line)
    for sub in ("resume", "eval"):
        r = cli(sub, "--help")
        assert r.returncode == 0 and "RUN_DIR" in r.stdout


def test_config_error_is_a_value_error():
    with pytest.raises(ConfigError):
        from_flat({"batch_size": 0})


@pytest.mark.parametrize(
    "flat, expected",
    [
        ({"replay": "ct", "replay.k": 5}, "unknown key 'replay.k': replay=ct takes replay.alpha"),
        ({"replay": "nmer", "replay.k": 0}, "replay.k=0: expected an integer >= 1"),
        ({"replay": "per", "replay.beta": 2}, "replay.beta=2: expected a number in [0.0, 1.0]"),
        ({"replay": "noise", "replay.per_batch": "maybe"}, "replay.per_batch=maybe: expected true or false"),
        ({"replay": "gpr"}, "replay=gpr: expected one of uniform, per, ct, s4rl, mixup, noise, nmer, lcer_cc, lcer_rm, bier"),
    ],
)
def test_replay_parameters_are_validated_per_method(flat, expected):
    from replaylab.config import from_flat
    from replaylab.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        from_flat(flat)
    assert str(e.value) == expected


def test_replay_parameters_round_trip_and_are_listed_in_help():
    from replaylab.config import from_flat, help_table

    cfg = from_flat({"replay": "nmer", "replay.k": 5, "replay.alpha": 0.4})
    assert dict(cfg.replay_cfg) == {"k": 5, "alpha": 0.4}
    assert from_flat(cfg.to_flat()) == cfg
    line = next(x for x in help_table().splitlines() if x.split()[0] == "replay.k")
    assert "[nmer, bier]" in line  # a parameter methods share is listed once, with its methods
