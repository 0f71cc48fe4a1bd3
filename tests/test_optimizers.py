"""build_optimizer, the structural decay exclusions and weight_decay_loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simclr import config as config_lib
from tf_simclr.train import optimizers
from tf_simclr.train.lars import LARS


class ProjectionLayer(keras.layers.Layer):
    """A custom layer hiding a bias-free Dense and a BN: exclusion must recurse."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(3, use_bias=False, name="proj_dense")
        self.bn = keras.layers.BatchNormalization(center=False, name="proj_bn")

    def call(self, x, training=False):
        return self.bn(self.dense(x), training=training)


class TinySimCLR(keras.Model):
    """encoder / projection_head / supervised_head, like tf_simclr's model."""

    def __init__(self, with_head=True):
        super().__init__(name="tiny_simclr")
        self.encoder = keras.Sequential([
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="enc_bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5, name="enc_dense"),
        ], name="encoder")
        self.projection_head = ProjectionLayer(name="projection_head")
        self.supervised_head = keras.layers.Dense(3, name="sup") if with_head else None

    def call(self, images, training=False):
        features = self.encoder(images, training=training)
        projection = self.projection_head(features, training=training)
        if self.supervised_head is None:
            return projection, None
        return projection, self.supervised_head(tf.stop_gradient(features))


def built_model(with_head=True):
    model = TinySimCLR(with_head)
    model(np.zeros((2, 6, 6, 3), np.float32))
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


def by_short_path(variables):
    """'enc_bn/gamma' style names: the last two path components."""
    return sorted("/".join(v.path.split("/")[-2:]) for v in variables)


def test_fixture_variables():
    assert by_short_path(built_model().trainable_variables) == sorted([
        "conv/kernel", "enc_bn/gamma", "enc_bn/beta", "enc_dense/kernel",
        "enc_dense/bias", "proj_dense/kernel", "proj_bn/gamma", "sup/kernel",
        "sup/bias"])


def test_decay_exclusions_finds_bn_biases_and_head():
    excluded = optimizers.decay_exclusions(built_model())
    assert by_short_path(excluded) == sorted([
        "enc_bn/gamma", "enc_bn/beta", "enc_bn/moving_mean", "enc_bn/moving_variance",
        "proj_bn/gamma", "proj_bn/moving_mean", "proj_bn/moving_variance",
        "enc_dense/bias", "sup/kernel", "sup/bias"])
    assert len({id(v) for v in excluded}) == len(excluded)


def test_decay_exclusions_without_supervised_head():
    expected = sorted([
        "enc_bn/gamma", "enc_bn/beta", "enc_bn/moving_mean", "enc_bn/moving_variance",
        "proj_bn/gamma", "proj_bn/moving_mean", "proj_bn/moving_variance",
        "enc_dense/bias"])
    assert by_short_path(optimizers.decay_exclusions(built_model(False))) == expected
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d"),
                              keras.layers.BatchNormalization(name="b")])
    assert by_short_path(optimizers.decay_exclusions(plain)) == sorted(
        ["d/bias", "b/gamma", "b/beta", "b/moving_mean", "b/moving_variance"])


def test_decay_exclusions_rejects_unbuilt_model_and_bad_head():
    with pytest.raises(ValueError, match="no variables yet"):
        optimizers.decay_exclusions(TinySimCLR())
    model = built_model()
    model.supervised_head = "head"
    with pytest.raises(ValueError, match="supervised_head is 'head'"):
        optimizers.decay_exclusions(model)


def config_for(optimizer, weight_decay=1e-3, momentum=0.8):
    return config_lib.Config().replace(optimizer=optimizer, weight_decay=weight_decay,
                                       momentum=momentum)


def test_build_lars():
    model = built_model()
    optimizer = optimizers.build_optimizer(config_for("lars"), 0.3, model)
    assert isinstance(optimizer, LARS) and not optimizer.built
    config = optimizer.get_config()
    assert (config["momentum"], config["weight_decay"], config["nesterov"],
            config["trust_coefficient"]) == (0.8, 1e-3, False, 0.001)
    expected = ["^" + v.path + "$" for v in optimizers.decay_exclusions(model)]
    assert config["exclude_from_weight_decay"] == expected
    assert config["exclude_from_layer_adaptation"] == expected


def test_build_momentum_adam_adamw():
    model = built_model()
    sgd = optimizers.build_optimizer(config_for("momentum"), 0.3, model)
    assert type(sgd) is keras.optimizers.SGD
    assert (sgd.momentum, sgd.nesterov) == (0.8, True)
    adam = optimizers.build_optimizer(config_for("adam"), 0.3, model)
    assert type(adam) is keras.optimizers.Adam
    assert (adam.beta_1, adam.beta_2, adam.weight_decay) == (0.9, 0.999, None)
    adamw = optimizers.build_optimizer(config_for("adamw"), 0.3, model)
    assert type(adamw) is keras.optimizers.AdamW and adamw.weight_decay == 1e-3


def test_mixed_float16_wraps_in_loss_scale_optimizer():
    model = built_model()
    config = config_for("momentum").replace(precision="mixed_float16")
    optimizer = optimizers.build_optimizer(config, 0.3, model)
    assert isinstance(optimizer, optimizers.LossScaleOptimizer)
    assert type(optimizer.inner_optimizer) is keras.optimizers.SGD
    assert optimizer.inner_optimizer.nesterov
    # The scaled loss's gradients are unscaled before the step: same update as the
    # plain optimizer (the scale is a power of 2, so exactly the same).
    plain_model = built_model()
    plain = optimizers.build_optimizer(config_for("momentum"), 0.3, plain_model)
    images = np.random.default_rng(1).uniform(size=(4, 6, 6, 3)).astype(np.float32)
    for m, opt, scale in ((model, optimizer, optimizer.scale_loss),
                          (plain_model, plain, lambda loss: loss)):
        with tf.GradientTape() as tape:
            projection, logits = m(images, training=True)
            loss = scale(tf.reduce_sum(projection ** 2) + tf.reduce_sum(logits ** 2))
        opt.apply_gradients(zip(tape.gradient(loss, m.trainable_variables),
                                m.trainable_variables))
    assert optimizer.iterations.numpy() == 1
    for a, b in zip(model.get_weights(), plain_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_adamw_decays_only_included_variables():
    # Zero gradients: Adam's step is 0, so only the decoupled decay moves weights.
    model = built_model()
    optimizer = optimizers.build_optimizer(config_for("adamw", weight_decay=0.5), 0.1,
                                           model)
    start = {v.path: v.numpy() for v in model.trainable_variables}
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    excluded = {v.path for v in optimizers.decay_exclusions(model)}
    for v in model.trainable_variables:
        factor = 1.0 if v.path in excluded else 1 - 0.1 * 0.5
        np.testing.assert_allclose(v.numpy(), start[v.path] * factor, rtol=1e-6)


def test_build_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="--optimizer='sgd'.*'lars'"):
        optimizers.build_optimizer(config_for("sgd"), 0.1, built_model())


def numpy_l2(model, short_paths):
    return sum(0.5 * np.sum(np.square(v.numpy().astype(np.float64)))
               for v in model.trainable_variables
               if "/".join(v.path.split("/")[-2:]) in short_paths)


@pytest.mark.parametrize("optimizer, short_paths", [
    ("lars", {"sup/kernel"}),
    ("momentum", {"conv/kernel", "enc_dense/kernel", "enc_dense/bias",
                  "proj_dense/kernel", "sup/kernel", "sup/bias"}),
    ("adam", {"conv/kernel", "enc_dense/kernel", "enc_dense/bias",
              "proj_dense/kernel", "sup/kernel", "sup/bias"}),
])
def test_weight_decay_loss_matches_numpy(optimizer, short_paths):
    model = built_model()
    got = optimizers.weight_decay_loss(config_for(optimizer, weight_decay=1e-2), model)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), 1e-2 * numpy_l2(model, short_paths),
                               rtol=1e-6)


def test_weight_decay_loss_zero_cases():
    model = built_model()
    assert optimizers.weight_decay_loss(config_for("adamw", 1e-2), model).numpy() == 0
    assert optimizers.weight_decay_loss(config_for("momentum", 0.0), model).numpy() == 0
    no_head = built_model(with_head=False)
    assert optimizers.weight_decay_loss(config_for("lars", 1e-2), no_head).numpy() == 0
    with pytest.raises(ValueError, match="--optimizer='sgd'"):
        optimizers.weight_decay_loss(config_for("sgd"), model)


def test_weight_decay_loss_skips_frozen_head():
    model = built_model()
    model.supervised_head.trainable = False
    assert optimizers.weight_decay_loss(config_for("lars", 1e-2), model).numpy() == 0
