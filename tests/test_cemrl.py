"""CEMRL: the class-Gaussian encoder, the encoder phase, relabelling, and runs through the one loop."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import replaylab
from replaylab.inference import InferenceSpec, make_inference
from replaylab.inference.cemrl import CEMRL, same_task_rows, split_of
from replaylab.inference.window import push
from replaylab.replay import storage as replay_storage
from replaylab.replay.storage import Transition
from replaylab.replay.tasks import window_context
from tests.conftest import TOY1D_BUDGET, checkpoint_arrays, resumed_equals_uninterrupted

CEMRL_RUN = {"env": "meta:toy1d", "inference": "cemrl", "total_steps": 900, "warmup_steps": 300,
             "eval_interval": 450, "checkpoint_interval": 0, "buffer_size": 3000, "batch_size": 32, "meta_batch": 4,
             "train_tasks": 8, "test_tasks": 3, "eval_train_tasks": 0, "episode_length": 50, "change_steps": 20,
             "progress_bar": False, "tensorboard": False, "agent.hidden_sizes": [16, 16],
             "inference.context_size": 4, "inference.every": 300, "inference.encoder_steps": 100,
             "inference.eval_interval": 25, "inference.encoder_batch": 64, "inference.net_complexity": 4}


def run_cfg(run) -> dict:
    return dict(run.config.inference_cfg)


def _method(run) -> CEMRL:
    return make_inference("cemrl", run_cfg(run), InferenceSpec(1, 1))


def _seed(state, i=0):
    return jax.tree.map(lambda x: x[i], state)


@pytest.fixture(scope="module")
def cemrl_run(tmp_path_factory):
    return replaylab.train({**CEMRL_RUN, "seeds": 2, "run_dir": str(tmp_path_factory.mktemp("cemrl") / "run")})


def _window():
    """A 5-row window of a 2-D state, 1-D action env whose first two rows are not real."""
    window = Transition(obs=jax.random.normal(jax.random.PRNGKey(1), (5, 2)), action=jnp.ones((5, 1)),
                        reward=jnp.arange(5.0), next_obs=jnp.zeros((5, 2)), terminated=jnp.zeros(5, bool),
                        episode=jnp.zeros(5, jnp.int32), step=jnp.arange(5, dtype=jnp.int32))
    return window, jnp.array([False, False, True, True, True])


def test_window_posterior_is_a_product_of_gaussians_over_the_real_rows():
    m = CEMRL(InferenceSpec(2, 1), latent_dim=2, num_classes=3, context_size=5, net_complexity=2)
    state = m.init(jax.random.PRNGKey(0))
    window, mask = _window()
    q, mean, var = m.window_posterior(state.encoder.params, state.stats, window, mask)
    probs, precision, weighted = m.factors(state.encoder.params, state.stats, window)
    np.testing.assert_allclose(q, probs[2:].mean(0), rtol=1e-5)
    np.testing.assert_allclose(var, 1.0 / precision[2:].sum(0), rtol=1e-5)  # variances, not std (original's bug)
    np.testing.assert_allclose(mean, var * weighted[2:].sum(0), rtol=1e-5, atol=1e-6)
    # masked rows do not matter; an empty window is uniform over classes and N(0, I)
    other = window.replace(obs=window.obs.at[:2].set(99.0))
    np.testing.assert_allclose(m.window_posterior(state.encoder.params, state.stats, other, mask)[1], mean, rtol=1e-6)
    q0, mean0, var0 = m.window_posterior(state.encoder.params, state.stats, window, jnp.zeros(5, bool))
    np.testing.assert_allclose(q0, 1 / 3)
    np.testing.assert_allclose(mean0, 0.0)
    np.testing.assert_allclose(var0, 1.0)


def test_the_validation_split_is_a_fixed_fifth_of_transitions():
    ep, step = jnp.repeat(jnp.arange(400), 50), jnp.tile(jnp.arange(50), 400)
    split = np.asarray(split_of(ep, step))
    assert abs((split < 2).mean() - 0.2) < 0.01
    np.testing.assert_array_equal(split, np.asarray(split_of(ep, step)))


@pytest.fixture(scope="module")
def cemrl_trajectory_run(tmp_path_factory):
    return replaylab.train({**CEMRL_RUN, "seeds": 1, "inference.encoder": "trajectory",
                            "inference.encoder_width": 24, "inference.decoder_target": "task",
                            "run_dir": str(tmp_path_factory.mktemp("cemrl_trajectory") / "run")})


def test_the_trajectory_encoder_reads_only_the_real_rows_of_a_window():
    m = CEMRL(InferenceSpec(2, 1), latent_dim=2, num_classes=3, context_size=5, net_complexity=2,
              encoder="trajectory")
    state = m.init(jax.random.PRNGKey(0))
    window, mask = _window()
    q, mean, var = m.window_posterior(state.encoder.params, state.stats, window, mask)
    np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-6)
    assert float(jnp.abs(mean).max()) > 1e-4 and bool(jnp.all(var > 0))
    other = window.replace(obs=window.obs.at[:2].set(99.0))
    np.testing.assert_array_equal(m.window_posterior(state.encoder.params, state.stats, other, mask)[1], mean)
    changed = window.replace(obs=window.obs.at[3].set(5.0))  # a real row: the posterior moves
    assert float(jnp.abs(m.window_posterior(state.encoder.params, state.stats, changed, mask)[1] - mean).max()) > 1e-5
    q0, mean0, var0 = m.window_posterior(state.encoder.params, state.stats, window, jnp.zeros(5, bool))
    np.testing.assert_allclose(q0, 1 / 3)
    np.testing.assert_allclose(mean0, 0.0)
    np.testing.assert_allclose(var0, 1.0)


def test_task_decoder_targets_reach_exactly_the_rows_of_the_episode_and_task_across_the_wrap():
    """A ring of 80 rows after 110 steps (episodes of 7, 20, 3, 50 and 30 steps, the
    50-step one switching task at step 25): over 400 draws each row's targets are exactly
    the stored rows of its episode and task within 15 steps."""
    lengths, capacity = (7, 20, 3, 50, 30), 80
    episode = np.concatenate([np.full(n, e) for e, n in enumerate(lengths)])
    step = np.concatenate([np.arange(n) for n in lengths])
    task = 10 * episode + (step >= 25)
    ring = np.zeros((3, capacity), np.int32)
    ring[:, np.arange(len(step)) % capacity] = episode, step, task  # later rows overwrite
    e, s, t = ring
    storage = replay_storage.init(capacity, 1, 1, {"task": ((), jnp.int32)})
    storage = storage.replace(data=storage.data.replace(episode=jnp.asarray(e), step=jnp.asarray(s),
                                                        extra={"task": jnp.asarray(t)}),
                              size=jnp.asarray(capacity), ptr=jnp.asarray(len(step) % capacity))
    rows = np.arange(capacity)
    draws = np.stack([np.asarray(same_task_rows(storage, jnp.asarray(rows), 15, jax.random.PRNGKey(k)))
                      for k in range(400)])
    for i in rows:
        valid = {j for j in rows if e[j] == e[i] and t[j] == t[i] and abs(s[j] - s[i]) <= 15
                 and (j - i) % capacity == (s[j] - s[i]) % capacity}
        assert set(draws[:, i].tolist()) == valid, (i, valid)


def test_task_decoder_targets_share_the_windows_episode_and_task_within_reach(cemrl_run):
    """decoder_target=task: the reconstructed transition is drawn from the window's episode
    and task (CEMRL_RUN switches tasks every 20 steps), up to the reach either side."""
    storage = _seed(cemrl_run.state).storage
    rows = np.arange(int(storage.size))
    target = np.asarray(same_task_rows(storage, jnp.asarray(rows), 15, jax.random.PRNGKey(3)))
    episode, step, task = (np.asarray(x) for x in (storage.data.episode, storage.data.step,
                                                     storage.data.extra["task"]))
    np.testing.assert_array_equal(episode[target], episode[rows])
    np.testing.assert_array_equal(task[target], task[rows])
    offset = step[target] - step[rows]
    assert np.abs(offset).max() <= 15


    def stretch(i, sign):  # rows that way of the same episode and task, consecutive steps
        n = 0
        while n < 15 and 0 <= i + sign * (n + 1) < len(rows) and episode[i + sign * (n + 1)] == episode[i] \
                and task[i + sign * (n + 1)] == task[i] and step[i + sign * (n + 1)] == step[i] + sign * (n + 1):
            n += 1
        return n

    back, ahead = np.array([stretch(i, -1) for i in rows]), np.array([stretch(i, 1) for i in rows])
    assert np.all((-back <= offset) & (offset <= ahead))
    assert abs(np.mean((offset + back) / np.maximum(back + ahead, 1)) - 0.5) < 0.04  # uniform over the stretch
    assert (offset == -back).mean() > 0.03 and (offset == ahead).mean() > 0.03  # its ends are reached
    for kind, reach in (("next", 0), ("task", 15)):  # next: the row the window precedes
        m = make_inference("cemrl", {**run_cfg(cemrl_run), "decoder_target": kind, "target_range": 15},
                           InferenceSpec(1, 1))
        d, window, mask, _ = m.draw(storage, jax.random.PRNGKey(4), 512, False)
        last = np.asarray(mask[:, -1])
        anchor_step = np.asarray(window.step[:, -1] + 1)[last]
        np.testing.assert_array_equal(np.asarray(window.episode[:, -1])[last], np.asarray(d.episode)[last])
        gap = np.abs(np.asarray(d.step)[last] - anchor_step)
        assert gap.max() <= reach and (reach == 0 or gap.mean() > 3), (kind, gap)


@pytest.mark.parametrize("fixture", ["cemrl_run", "cemrl_trajectory_run"])
def test_stored_z_equal_the_encoders_output_for_those_rows(fixture, request):
    """After the last phase's relabelling and the rows stored since (annotated at store time),
    every stored row's z and next z are the current encoder's for its windows."""
    run = request.getfixturevalue(fixture)
    m = _method(run)
    for i in range(run.config.seeds):
        s = _seed(run.state, i)
        storage, T = s.storage, m.context_size
        rows = jnp.arange(int(storage.size))
        window, mask = window_context(storage, rows, T)
        window = window.replace(extra={})
        p = (s.inference.encoder.params, s.inference.stats)
        z = jax.vmap(lambda w, k: m.posterior(p, w, k)[0])(window, mask)
        np.testing.assert_allclose(storage.data.extra["z"][rows], z, rtol=1e-4, atol=1e-5)
        rows_tr = jax.tree.map(lambda x: x[rows], storage.data).replace(extra={})
        after = jax.vmap(push)(window, mask, rows_tr)
        next_z = jax.vmap(lambda w, k: m.posterior(p, w, k)[0])(*after)
        np.testing.assert_allclose(storage.data.extra["next_z"][rows], next_z, rtol=1e-4, atol=1e-5)
        assert float(jnp.std(z)) > 1e-3  # not a constant


def test_encoder_training_raises_the_elbo_and_restores_the_best(cemrl_run):
    m = _method(cemrl_run)
    import dataclasses

    m = dataclasses.replace(m, encoder_steps=400, patience=1000, eval_interval=50)
    storage = _seed(cemrl_run.state).storage
    fresh = m.init(jax.random.PRNGKey(3))
    state, metrics = jax.jit(m.encoder_phase)(fresh, storage, jax.random.PRNGKey(4))
    assert float(metrics["encoder_steps"]) == 400
    assert float(metrics["elbo"]) > float(metrics["elbo_start"]) + 0.1 * abs(float(metrics["elbo_start"]))
    val = m.draw(storage, jax.random.PRNGKey(5), 1024, True)
    before = sum(m.errors(state.replace(encoder=fresh.encoder), fresh.encoder.params, fresh.decoder.params, *val))
    after = sum(m.errors(state, state.encoder.params, state.decoder.params, *val))
    assert float(after) < 0.5 * float(before)


def test_cemrl_run_logs_the_phase(cemrl_run):
    rows = cemrl_run.progress
    assert {"encoder_val_state_loss", "elbo", "time_encoder", "time_relabel"} <= set(rows[0])
    assert all(np.isfinite(r["elbo"]) and r["encoder_steps"] > 0 for r in rows)
    assert all(r["time_encoder"] > 0 for r in rows)


def test_vmapped_cemrl_seeds_equal_separate_runs(cemrl_run, tmp_path):
    alone = replaylab.train({**CEMRL_RUN, "seeds": 1, "seed": 1, "run_dir": str(tmp_path / "s1")})
    a = jax.tree.leaves(_seed(cemrl_run.state, 1))
    b = jax.tree.leaves(_seed(alone.state, 0))
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=1e-5)
    together = [r["return_mean"] for r in cemrl_run.progress if r["seed"] == 1]
    np.testing.assert_allclose(together, [r["return_mean"] for r in alone.progress], rtol=1e-3)


@pytest.mark.slow  # `make test-all`; the plain and meta SIGKILL resumes stay in `make test`
def test_cemrl_resumes_bit_identically_after_sigkill_inside_an_encoder_phase(tmp_path):
    """Checkpoints fall between environment steps, so a kill inside a phase loses it and
    the resumed run redoes it from the last checkpoint: the same run, bit for bit."""
    cfg = {**CEMRL_RUN, "total_steps": 1200, "checkpoint_interval": 300, "seeds": 1,
           "inference.encoder_steps": 2000, "inference.patience": 5000}
    # phases run at steps 299, 300, 600, ... (each before that step's checkpoint) and take
    # seconds, the 300 steps between them well under one: a second after the step-300
    # checkpoint appears, the phase at step 600 is running
    _, run = resumed_equals_uninterrupted(cfg, tmp_path, 300, delay=1.0)
    assert any("next_z" in k for k in checkpoint_arrays(run["run_dir"]))


# CEMRL on meta:toy1d (see TOY1D_BUDGET for the baselines).
CEMRL_BUDGET = {**TOY1D_BUDGET, "inference": "cemrl", "batch_size": 256, "inference.every": 1000,
                "inference.encoder_steps": 500}


# 44-48 s; in `make test` (issue 9 asks for CEMRL on toy2d or point-robot: see README's toy2d
# paragraph for why no fixed test budget separates it from task-blind reliably yet)
def test_cemrl_infers_the_goal_within_an_episode_within_the_budget(tmp_path):
    run = replaylab.train({**CEMRL_BUDGET, "run_dir": str(tmp_path / "cemrl")})
    final = [r["return_mean"] for r in run.progress if r["env_step"] == 8000]
    assert np.mean(final) >= -180, final  # measured -151.8 and -163.4; no task-blind policy beats -194.9
