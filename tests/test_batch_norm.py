"""layers.BatchNorm (the fused kernel) against keras.layers.BatchNormalization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simclr.models import layers


def _pair(shape, center=True, momentum=0.9, dtype=None):
    """The fused layer and keras' own, built with the same random variables."""
    rng = np.random.default_rng(0)
    made = []
    for cls in (layers.BatchNorm, keras.layers.BatchNormalization):
        layer = cls(axis=-1, momentum=momentum, epsilon=layers.BATCH_NORM_EPSILON,
                    center=center, dtype=dtype)
        layer.build(shape)
        made.append(layer)
    for variables in zip(*(layer.weights for layer in made)):
        value = rng.uniform(0.5, 1.5, variables[0].shape).astype(np.float32)
        for variable in variables:
            variable.assign(value)
    return made


def _run(layer, x, training, upstream):
    """(outputs, grads w.r.t. [x] + trainable weights, moving statistics after)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return y, grads, [v.numpy() for v in (layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("shape", [(6, 5, 3, 4), (9, 7)])
@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_matches_keras_batch_normalization(shape, center, training):
    fused, reference = _pair(shape, center)
    initial = [v.numpy() for v in (fused.moving_mean, fused.moving_variance)]
    x = tf.random.stateless_normal(shape, [1, 2]) * 3.0 + 1.0
    upstream = tf.random.stateless_normal(shape, [3, 4])
    y, grads, moving = _run(fused, x, training, upstream)
    y_ref, grads_ref, moving_ref = _run(reference, x, training, upstream)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(grads_ref) == 2 + center
    for grad, grad_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-4, atol=1e-4)
    for value, value_ref in zip(moving, moving_ref):
        np.testing.assert_allclose(value, value_ref, rtol=1e-5, atol=1e-6)
    # Independently of keras: training moves the statistics 10% towards the batch's
    # mean and biased variance; inference leaves them.
    batch = x.numpy().reshape(-1, shape[-1]).astype(np.float64)
    targets = [batch.mean(0), batch.var(0)] if training else initial
    for value, start, target in zip(moving, initial, targets):
        np.testing.assert_allclose(value, 0.9 * start + 0.1 * target if training else start,
                                   rtol=1e-5)


def test_frozen_layer_uses_moving_statistics_in_training():
    fused, reference = _pair((8, 3))
    fused.trainable = reference.trainable = False
    x = tf.random.stateless_normal((8, 3), [5, 6])
    moving_before = fused.moving_mean.numpy()
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), moving_before)


def test_mixed_bfloat16_matches_keras():
    fused, reference = _pair((16, 4, 4, 8), dtype="mixed_bfloat16")
    x = tf.random.stateless_normal((16, 4, 4, 8), [7, 8])
    y, y_ref = fused(x, training=True), reference(x, training=True)
    assert y.dtype == y_ref.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32),
                               rtol=1e-2, atol=1e-2)
    assert fused.moving_variance.dtype == tf.float32
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-5)


def test_runs_the_fused_kernel_and_keeps_synchronized_and_float64_unfused():
    def op_types(layer):
        layer.build((4, 2, 2, 3))
        graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(
            tf.TensorSpec((4, 2, 2, 3), layer.compute_dtype)).graph
        return {op.type for op in graph.get_operations()}
    assert "FusedBatchNormV3" in op_types(layers.BatchNorm())
    assert "FusedBatchNormV3" not in op_types(layers.BatchNorm(synchronized=True))
    assert "FusedBatchNormV3" not in op_types(layers.BatchNorm(dtype="float64"))
