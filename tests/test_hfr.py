"""Hindsight-foresight relabelling: the task choice, the stored copies against the real
env's rewards, and exact resume of a DMRLAD run (CEMRL + DSAC + HFR)."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from replaylab.config import from_flat
from replaylab.envs.meta import make_meta_env
from replaylab.errors import ConfigError
from replaylab.replay.hfr import HFR
from replaylab.replay.relabel import RelabelSpec
from replaylab.training.evaluate import TRAIN_STREAM, episode_seed
from tests.conftest import checkpoint_arrays, resumed_equals_uninterrupted

DMRLAD = {"env": "meta:sparse-point-robot", "inference": "cemrl", "agent": "dsac", "relabel": "hfr",
          "total_steps": 600, "warmup_steps": 200, "eval_interval": 300, "checkpoint_interval": 310,
          "progress_bar": False, "tensorboard": False, "buffer_size": 5000, "batch_size": 64, "meta_batch": 4,
          "train_tasks": 10, "test_tasks": 4, "agent.hidden_sizes": [32, 32], "agent.num_quantiles": 8,
          "inference.latent_dim": 2, "inference.every": 200, "inference.encoder_steps": 50,
          "relabel.log_z_every": 200}


def _hfr(**kw) -> HFR:
    env = make_meta_env("sparse-point-robot", num_train=5, num_test=1)
    return HFR(spec=RelabelSpec(type(env).reward_fn, env.tasks.params[:5], 20), **kw)


def test_the_task_is_sampled_from_the_softmax_of_utility_minus_log_partition():
    utility = jnp.array([1.0, 2.0, 0.5, 3.0, 9.0])
    log_z = jnp.array([0.0, 0.5, 0.0, 1.0, 0.0])
    available = jnp.array([True, True, True, True, False])  # task 4 has no data: never chosen
    draws = jax.vmap(lambda k: _hfr().choose(k, utility, log_z, available))(jax.random.split(jax.random.PRNGKey(0),
                                                                                              40_000))
    freq = np.bincount(np.asarray(draws), minlength=5) / 40_000
    logits = np.array([1.0, 1.5, 0.5, 2.0])
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(freq[:4], expected, atol=0.01)
    assert freq[4] == 0
    assert int(_hfr(softmax=False).choose(jax.random.PRNGKey(0), utility, log_z, available)) == 3
    assert float(HFR.log_mean_exp(jnp.log(jnp.array([1.0, 2.0, 3.0])))) == pytest.approx(np.log(2.0))


@pytest.mark.slow  # `make test-all`; the plain and meta SIGKILL resumes stay in `make test`
def test_dmrlad_resumes_exactly_and_its_copies_carry_the_real_env_rewards_of_their_task(tmp_path):
    ref, _ = resumed_equals_uninterrupted(DMRLAD, tmp_path, step=310)
    x = checkpoint_arrays(ref["run_dir"])
    col = lambda name: x[f"state.storage.data.{name}"][0]  # noqa: E731  (seed 0)
    n = int(x["state.storage.size"][0])
    episode, step, task = col("episode")[:n], col("step")[:n], col("extra['task']")[:n]
    copies = sorted(set(episode[episode < 0].tolist()), reverse=True)  # copy of episode e: id -(e + 1)
    # one copy of every training episode after the warm-up (episodes 9..29 end at steps 200..600)
    assert [-c - 1 for c in copies] == list(range(9, 30))
    assert n == 600 + 20 * len(copies) and int(x["state.relabel.copies"][0]) == len(copies)

    env = from_flat(DMRLAD).make_env()
    chosen = []
    for c in copies:
        e = -c - 1
        for ep in (e, c):  # the original, then its copy: each against a real env on its stored task
            rows = np.nonzero(episode == ep)[0]
            assert np.array_equal(step[rows], np.arange(20)) and len(set(task[rows])) == 1
            obs = env.reset(episode_seed(0, TRAIN_STREAM, e), int(task[rows[0]]))
            np.testing.assert_array_equal(obs, col("obs")[rows[0]])
            for r in rows:
                obs, reward, terminated, _, _ = env.step(col("action")[r])
                np.testing.assert_array_equal(obs, col("next_obs")[r])
                assert reward == pytest.approx(float(col("reward")[r]), abs=1e-6)
                assert terminated == bool(col("terminated")[r])
        chosen.append(int(task[episode == c][0]) != int(task[episode == e][0]))
    assert any(chosen)  # relabelled to other tasks, not only copied
    with open(f"{ref['run_dir']}/progress.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["hfr_copies"]) == len(copies) and 0.0 <= float(last["hfr_same_task"]) < 1.0


def test_relabelling_needs_fixed_length_episodes_and_an_encoding_per_trajectory():
    with pytest.raises(ConfigError, match="relabel=hfr: env=meta:ant-vel can end episodes early"):
        from_flat({"env": "meta:ant-vel", "relabel": "hfr"})
    with pytest.raises(ConfigError, match="relabel=hfr: inference=pearl is not supported"):
        from_flat({"env": "meta:point-robot", "relabel": "hfr", "inference": "pearl"})
    with pytest.raises(ConfigError, match="relabel=hfr: inference=oracle is not supported"):
        from_flat({"env": "meta:point-robot", "relabel": "hfr", "inference": "oracle"})
    with pytest.raises(ConfigError, match="relabel=hfr: needs a task distribution"):
        from_flat({"env": "Pendulum-v1", "relabel": "hfr"})
