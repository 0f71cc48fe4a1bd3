"""WarmUpAndCosineDecay against the official formulas, and its serialisation."""

import copy
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simclr import config as config_lib
from tf_simclr.train import schedules
from tf_simclr.train.schedules import WarmUpAndCosineDecay


def formula(step, base, warmup, total):
    """Official: step / warmup * base in warmup, then cosine (alpha 0) to total."""
    if step >= total:
        return 0.0
    if step < warmup:
        return step / warmup * base
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@pytest.mark.parametrize("step, expected", [
    (0, 0.0),                                   # start of warmup
    (50, 1.2),                                  # mid-warmup: half the peak
    (100, 2.4),                                 # end of warmup: the peak
    (550, 1.2),                                 # middle of the cosine: half the peak
    (775, 2.4 * 0.5 * (1 + math.cos(math.pi * 0.75))),
    (999, 2.4 * 0.5 * (1 + math.cos(math.pi * 899 / 900))),
    (1000, 0.0),                                # end
    (1500, 0.0),                                # past the end: stays 0
])
def test_values_match_formula(step, expected):
    schedule = WarmUpAndCosineDecay(2.4, warmup_steps=100, total_steps=1000)
    assert expected == pytest.approx(formula(step, 2.4, 100, 1000), abs=1e-12)
    got = schedule(tf.constant(step, tf.int64))
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_every_step_matches_formula_in_a_tf_function():
    schedule = WarmUpAndCosineDecay(0.7, warmup_steps=7, total_steps=30)
    step = tf.Variable(0, dtype=tf.int64)       # like optimizer.iterations
    lr_at = tf.function(lambda: schedule(step))
    for s in range(35):
        step.assign(s)
        np.testing.assert_allclose(lr_at().numpy(), formula(s, 0.7, 7, 30),
                                   rtol=1e-6, atol=1e-7)


def test_no_warmup_starts_at_the_peak():
    schedule = WarmUpAndCosineDecay(1.0, warmup_steps=0, total_steps=10)
    np.testing.assert_allclose(
        [schedule(s).numpy() for s in (0, 5, 10)], [1.0, 0.5, 0.0], atol=1e-7)


def test_warmup_longer_than_training_ramps_until_the_end():
    schedule = WarmUpAndCosineDecay(1.0, warmup_steps=100, total_steps=10)
    np.testing.assert_allclose(
        [schedule(s).numpy() for s in (0, 9, 10, 50)], [0.0, 0.09, 0.0, 0.0], atol=1e-7)


def test_get_config_round_trip():
    schedule = WarmUpAndCosineDecay(0.3, 12, 345, name="lr")
    config = schedule.get_config()
    assert config == {"base_learning_rate": 0.3, "warmup_steps": 12,
                      "total_steps": 345, "name": "lr"}
    assert WarmUpAndCosineDecay.from_config(config).get_config() == config
    revived = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert type(revived) is WarmUpAndCosineDecay and revived.get_config() == config


def test_round_trip_inside_an_optimizer():
    optimizer = keras.optimizers.SGD(WarmUpAndCosineDecay(0.3, 12, 345))
    config = optimizer.get_config()
    revived = keras.optimizers.SGD.from_config(copy.deepcopy(config))
    assert revived.get_config() == config
    variable = keras.Variable(1.0)
    revived.build([variable])
    revived.iterations.assign(6)
    np.testing.assert_allclose(revived.learning_rate.numpy(), 0.15, rtol=1e-6)


def test_build_schedule_uses_the_official_derived_quantities():
    config = config_lib.Config().replace(train_batch_size=512, learning_rate=0.3,
                                         learning_rate_scaling="linear",
                                         warmup_epochs=10, train_epochs=100)
    schedule = schedules.build_schedule(config, 50_000)
    assert schedule.get_config() == {
        "base_learning_rate": 0.6,                   # 0.3 * 512 / 256
        "warmup_steps": 976,                         # round(10 * 50000 // 512)
        "total_steps": 9766,                         # 50000 * 100 // 512 + 1
        "name": None}
    assert schedule.get_config()["base_learning_rate"] == \
        config_lib.scaled_learning_rate(config)
    sqrt = schedules.build_schedule(
        config.replace(learning_rate_scaling="sqrt", learning_rate=0.075,
                       train_steps=500), 50_000)
    assert sqrt.base_learning_rate == pytest.approx(0.075 * math.sqrt(512))
    assert sqrt.total_steps == 500


@pytest.mark.parametrize("args, match", [
    ((-0.1, 10, 100), "base_learning_rate=-0.1"),
    ((0.1, -1, 100), "warmup_steps=-1"),
    ((0.1, 2.5, 100), "warmup_steps=2.5"),
    ((0.1, 10, 0), "total_steps=0"),
])
def test_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        WarmUpAndCosineDecay(*args)


def test_build_schedule_rejects_bad_example_count():
    with pytest.raises(ValueError, match="num_train_examples=0"):
        schedules.build_schedule(config_lib.Config(), 0)
