"""Projection head (hiddens list, every mode) and supervised head."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simclr.models.heads import ProjectionHead, SupervisedHead

FEATURES = 24
BATCH = 16


def _head(mode, num_layers, out_dim=8):
    head = ProjectionHead(mode=mode, out_dim=out_dim, num_layers=num_layers)
    head.build((None, FEATURES))
    return head


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mode", ["nonlinear", "linear", "none"])
def test_hiddens_list_shapes_for_every_mode_and_depth(mode, num_layers):
    head = _head(mode, num_layers)
    features = tf.random.normal((BATCH, FEATURES))
    hiddens = head(features, training=True)
    layers = {"nonlinear": num_layers, "linear": 1, "none": 0}[mode]
    assert head.num_linear_layers == layers
    expected = [FEATURES] + [FEATURES] * (layers - 1) + [8] * (layers > 0)
    assert [tuple(h.shape) for h in hiddens] == [(BATCH, d) for d in expected]
    assert head.hidden_dims == expected
    assert hiddens[0] is features  # proj_head_input is the encoder output itself


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("mode", ["nonlinear", "linear", "none"])
def test_every_selector_and_partial_runs(mode, num_layers):
    head = _head(mode, num_layers)
    features = tf.random.normal((BATCH, FEATURES))
    full = head(features, training=False)
    count = head.num_linear_layers + 1
    for selector in range(-count, count):
        index = head.hiddens_index(selector)
        assert index == list(range(count))[selector]
        partial = head(features, training=False, num_layers=index)
        assert len(partial) == index + 1
        np.testing.assert_array_equal(partial[-1].numpy(), full[index].numpy())
    for bad in (-count - 1, count):
        with pytest.raises(ValueError, match=f"ft_proj_selector={bad}"):
            head.hiddens_index(bad)


def test_nonlinear_layers_follow_official_linear_layer():
    head = _head("nonlinear", 3, out_dim=8)
    for index, layer in enumerate(head.linear_layers):
        is_last = index == 2
        assert layer.dense.bias is None  # the BN carries the bias
        assert layer.dense.units == (8 if is_last else FEATURES)
        assert (layer.bn.beta is None) == is_last  # center=use_bias: none on the last
        assert layer.bn.gamma is not None and layer.bn.epsilon == 1e-5
        assert layer.bn.momentum == 0.9 and layer.bn.synchronized
    kernels = np.concatenate([layer.dense.kernel.numpy().ravel()
                              for layer in head.linear_layers])
    assert kernels.std() == pytest.approx(0.01, rel=0.1)
    assert abs(kernels.mean()) < 0.002


def test_batch_norm_and_relu_in_training_mode():
    head = _head("nonlinear", 3, out_dim=8)
    hiddens = head(tf.random.normal((256, FEATURES)) * 5.0 + 3.0, training=True)
    # Hidden layers end in ReLU; the output layer is BN without beta and no ReLU:
    # batch mean 0 and variance 1 per feature.
    assert all(float(tf.reduce_min(h)) == 0.0 for h in hiddens[1:-1])
    mean, variance = tf.nn.moments(hiddens[-1], axes=[0])
    _, dense_variance = tf.nn.moments(head.linear_layers[-1].dense(hiddens[-2]), axes=[0])
    np.testing.assert_allclose(mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(variance, dense_variance / (dense_variance + 1e-5), rtol=1e-3)


def test_linear_and_none_modes():
    features = tf.random.normal((BATCH, FEATURES))
    linear = _head("linear", 3, out_dim=5)
    hiddens = linear(features, training=True)
    assert len(hiddens) == 2 and hiddens[-1].shape == (BATCH, 5)
    assert float(tf.reduce_min(hiddens[-1])) < 0.0  # no ReLU
    assert [v.path.split("/")[-2:] for v in linear.trainable_weights] == [
        ["dense", "kernel"], ["bn", "gamma"]]
    none = _head("none", 3)
    assert none(features) == [features] and none.weights == []


def test_supervised_head():
    head = SupervisedHead(7)
    head.build((None, 512))
    np.testing.assert_array_equal(head.dense.bias.numpy(), 0.0)
    assert head.dense.kernel.numpy().std() == pytest.approx(0.01, rel=0.1)
    features = tf.random.normal((BATCH, 512))
    logits = head(features)
    assert logits.shape == (BATCH, 7)
    np.testing.assert_allclose(logits, features @ head.dense.kernel, rtol=1e-5, atol=1e-6)


def test_get_config_round_trips():
    head = ProjectionHead(mode="linear", out_dim=64, num_layers=2, batch_norm_decay=0.99,
                          global_bn=False, name="proj")
    clone = ProjectionHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone.build((None, FEATURES))
    assert clone.linear_layers[0].bn.momentum == 0.99 and not clone.linear_layers[0].bn.synchronized
    supervised = SupervisedHead(3, name="sup")
    assert SupervisedHead.from_config(supervised.get_config()).get_config() == {
        **supervised.get_config(), "num_classes": 3}
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(revived, ProjectionHead) and revived.mode == "linear"


@pytest.mark.parametrize("make, message", [
    (lambda: ProjectionHead(mode="mlp"), "mode='mlp'"),
    (lambda: ProjectionHead(out_dim=0), "out_dim=0"),
    (lambda: ProjectionHead(num_layers=0), "num_layers=0"),
    (lambda: SupervisedHead(0), "num_classes=0"),
    (lambda: ProjectionHead().hidden_dims, "not built")])
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
