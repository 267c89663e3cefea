"""Weight EMA (``base.ema_decay`` / ``slim.ema_decay``, the release's enable_EMA/EMA_decay):
the average a step keeps, what a stage hands on, and resuming a stage that keeps one."""

import os

import jax
import numpy as np
import pytest
from helpers import needs_fashion_mnist
from test_reliability import crash_after, flat, snet_slim_config
from test_train_step import KD_ALPHA, KD_TEMPERATURE, build

from spnet_jax.core import sharding
from spnet_jax.core.errors import ConfigError
from spnet_jax.train import loop, train_and_evaluate
from spnet_jax.train import state as state_lib
from spnet_jax.workdir import checkpoint

DECAY = 0.8


def _run_steps(case, steps, ema_decay):
    """``steps`` jitted steps on the same batch; the weights after each, and the last state."""
    model, structure, variables, batch, tx, schedule = case
    mesh = sharding.make_mesh()
    state = jax.jit(lambda v: state_lib.create_state(v, tx, ema=ema_decay > 0))(variables)
    step = loop.jit_train_step(model, structure.num_subnets, tx, schedule, mesh,
                               label_smoothing=0.0, distillation=(KD_ALPHA, KD_TEMPERATURE),
                               ema_decay=ema_decay)
    seen = []
    for _ in range(steps):
        state, _ = step(state, sharding.global_batch(batch, mesh))
        seen.append(flat({'params': state.params, 'batch_stats': state.batch_stats}))
    return seen, jax.device_get(state)


def test_ema_is_the_decayed_average_of_the_weights():
    case = build()
    start = flat({'params': case[2]['params'], 'batch_stats': case[2]['batch_stats']})
    weights, state = _run_steps(case, 3, DECAY)
    got = flat(state.ema)
    assert got.keys() == start.keys()
    moved = 0
    for key, value in start.items():
        expected = np.asarray(value, np.float64)
        for w in weights:  # ema_t = d * ema_{t-1} + (1 - d) * w_t, ema_0 = w_0
            expected = DECAY * expected + (1 - DECAY) * w[key]
        np.testing.assert_allclose(got[key], expected, rtol=1e-5, atol=1e-7, err_msg=key)
        moved += not np.allclose(expected, weights[-1][key])
    assert moved > len(start) // 2  # the average is not simply the last weights


def ema_config():
    config = snet_slim_config()
    config.slim.ema_decay = 0.5
    return config


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    """A six-step slim stage with weight EMA, run straight through."""
    workdir = str(tmp_path_factory.mktemp('ema_straight'))
    train_and_evaluate(ema_config(), workdir)
    return os.path.join(workdir, 'slim')


@needs_fashion_mnist
@pytest.mark.usefixtures('compilation_cache')
def test_stage_hands_on_the_ema_network_and_a_resumed_stage_keeps_the_same_average(
        straight, tmp_path, monkeypatch):
    ema = checkpoint.load_network(straight)[1]
    raw = checkpoint.load_network(straight, ema=False)[1]
    ema_flat, raw_flat = flat(ema), flat(raw)
    assert ema_flat.keys() == raw_flat.keys()
    assert any(not np.array_equal(ema_flat[k], raw_flat[k]) for k in raw_flat)

    starts = crash_after(monkeypatch, 5)  # checkpoints at 2 and 4, then a crash
    with pytest.raises(RuntimeError, match='simulated crash'):
        train_and_evaluate(ema_config(), str(tmp_path))
    resumed = os.path.join(str(tmp_path), 'slim')

    # Resuming with EMA switched off is refused in one sentence, and nothing is moved aside.
    config = ema_config()
    config.slim.ema_decay = 0.0
    with pytest.raises(ConfigError, match=r'made with slim\.ema_decay=0\.5, but the config '
                       r'now says slim\.ema_decay=0\.0'):
        train_and_evaluate(config, str(tmp_path))
    # The checkpoint's own check (for a stage folder without its config.json): not damage.
    with pytest.raises(ConfigError, match='written with weight EMA on and the config has it '
                       'off; set ema_decay as the run that wrote it had it'):
        checkpoint.check_saved_shapes(resumed, 4, {'variables': {}}, 'here')
    assert checkpoint.reader(resumed).all_steps() == [2, 4]

    summary = train_and_evaluate(ema_config(), str(tmp_path))
    assert starts == [0, 4] and summary['slim']['step'] == 6
    for kind in (True, False):  # bit for bit what the unbroken stage averaged and trained
        got = flat(checkpoint.load_network(resumed, ema=kind)[1])
        want = ema_flat if kind else raw_flat
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
