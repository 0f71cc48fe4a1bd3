"""NT-Xent under MirroredStrategy equals one device on the same global batch.

Each replica gets its contiguous slice of the global batch (replica r: rows
[r*b, (r+1)*b)), computes the loss on its slice with negatives gathered from all
replicas, divides it by R (the loop's contract) and takes gradients;
apply_gradients SUM-reduces them. Everything is compared with one device running
the same code on the whole batch: loss, logits, labels, the gradient with respect
to the embeddings, the gradient with respect to the weights of a conv + synced BN +
dense model, and the weights after one LARS / momentum step.
test_cut_gather_gradient_is_detected proves the comparison can fail.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from testutil import mirrored
from tf_simclr import config as config_lib
from tf_simclr.train import cross_replica, losses, optimizers

TEMPERATURE = 0.2


def shard(strategy, *global_arrays):
    """Per-replica values: replica r gets rows [r*b, (r+1)*b) of each array."""
    num_replicas = strategy.num_replicas_in_sync

    def slices(array):
        return np.split(np.asarray(array), num_replicas)

    per_array = [slices(a) for a in global_arrays]
    return [strategy.experimental_distribute_values_from_function(
        lambda ctx, s=s: tf.constant(s[ctx.replica_id_in_sync_group]))
        for s in per_array]


def local(strategy, value):
    """Per-replica results as a list of numpy structures, replica order."""
    return [tf.nest.map_structure(lambda t: t.numpy(), v)
            for v in strategy.experimental_local_results(value)]


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_cross_replica_concat_forward_and_gradient(num_replicas):
    strategy = mirrored(num_replicas)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_replicas * 3, 2)).astype(np.float32)
    # Replica r weighs the gathered tensor with its own w_r, loss_r = sum(w_r * y).
    w = rng.standard_normal((num_replicas, num_replicas * 3, 2)).astype(np.float32)
    (x_local,) = shard(strategy, x)
    (w_local,) = shard(strategy, w.reshape(num_replicas * num_replicas * 3, 2))

    @tf.function
    def step(x_local, w_local):
        def replica_fn(x_local, w_local):
            with tf.GradientTape() as tape:
                tape.watch(x_local)
                gathered = cross_replica.cross_replica_concat(x_local)
                loss = tf.reduce_sum(w_local * gathered)
            return gathered, tape.gradient(loss, x_local), \
                cross_replica.replica_id_in_sync_group()
        return strategy.run(replica_fn, args=(x_local, w_local))

    results = local(strategy, step(x_local, w_local))
    w_sum = w.sum(axis=0)       # what every row receives: all replicas' weights
    for r, (gathered, grad, replica_id) in enumerate(results):
        assert replica_id == r
        np.testing.assert_array_equal(gathered, x)
        np.testing.assert_allclose(grad, w_sum[3 * r:3 * (r + 1)], rtol=1e-6)


def test_helpers_outside_and_across_replicas():
    assert cross_replica.num_replicas_in_sync() == 1
    assert cross_replica.replica_id_in_sync_group().numpy() == 0
    x = tf.ones([2, 3])
    assert cross_replica.cross_replica_concat(x) is x
    strategy = mirrored(2)
    with strategy.scope():        # cross-replica context: the whole batch is local
        assert cross_replica.num_replicas_in_sync() == 1
        assert cross_replica.cross_replica_concat(x) is x


@pytest.mark.parametrize("num_replicas", [2, 4])
@pytest.mark.parametrize("normalize", [True, False])
def test_loss_and_embedding_gradients_match_one_device(num_replicas, normalize):
    rng = np.random.default_rng(num_replicas)
    z1 = rng.standard_normal((8, 5)).astype(np.float32)
    z2 = (z1 + 0.3 * rng.standard_normal((8, 5))).astype(np.float32)

    def loss_and_grads(z1, z2, num_replicas):
        with tf.GradientTape() as tape:
            tape.watch([z1, z2])
            loss, logits, labels = losses.nt_xent_loss(z1, z2, TEMPERATURE, normalize)
            scaled = loss / num_replicas          # the loop's loss scaling
        return (loss, logits, labels) + tuple(tape.gradient(scaled, [z1, z2]))

    one = loss_and_grads(tf.constant(z1), tf.constant(z2), 1)
    one = [t.numpy() for t in one]

    strategy = mirrored(num_replicas)
    z1_local, z2_local = shard(strategy, z1, z2)
    step = tf.function(lambda a, b: strategy.run(
        loss_and_grads, args=(a, b, strategy.num_replicas_in_sync)))
    per_replica = local(strategy, step(z1_local, z2_local))

    loss, logits, labels, grad_z1, grad_z2 = (
        [r[i] for r in per_replica] for i in range(5))
    np.testing.assert_allclose(np.mean(loss), one[0], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate(logits), one[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(labels), one[2])
    np.testing.assert_allclose(np.concatenate(grad_z1), one[3], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(grad_z2), one[4], rtol=1e-4, atol=1e-7)


def make_model():
    """Conv + synchronized BN + dense projection: the chain the gradients cross."""
    return keras.Sequential([
        keras.Input((6, 6, 3)),
        keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
        keras.layers.BatchNormalization(synchronized=True, name="bn"),
        keras.layers.ReLU(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(8, name="projection"),
    ], name="tiny")


RUN_CONFIGS = {
    "lars": (config_lib.Config().replace(optimizer="lars", momentum=0.9,
                                         weight_decay=1e-2), 2.0),
    "momentum": (config_lib.Config().replace(optimizer="momentum", momentum=0.9), 0.5),
    # --precision=mixed_float16 wraps the optimizer in a LossScaleOptimizer; the
    # model stays float32 here, so the scaled step must equal the plain one.
    "loss_scaled_momentum": (config_lib.Config().replace(
        optimizer="momentum", momentum=0.9, precision="mixed_float16"), 0.5),
}


def train_step_fn(model, optimizer, num_replicas):
    """One official train step: forward both views, NT-Xent, loss / R, apply.

    Returns the local loss and the gradients of the (possibly loss-scaled) loss.
    """
    def step(x1, x2):
        batch = tf.shape(x1)[0]
        with tf.GradientTape() as tape:
            z = model(tf.concat([x1, x2], axis=0), training=True)
            loss, _, _ = losses.nt_xent_loss(z[:batch], z[batch:], TEMPERATURE)
            scaled = loss / num_replicas
            if isinstance(optimizer, optimizers.LossScaleOptimizer):
                scaled = optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, [z] + model.trainable_variables)
        optimizer.apply_gradients(zip(grads[1:], model.trainable_variables))
        return loss, grads[0], grads[1:]
    return step


def run_one_device(images1, images2, initial_weights, optimizer_name):
    config, lr = RUN_CONFIGS[optimizer_name]
    model = make_model()
    model.set_weights(initial_weights)
    optimizer = optimizers.build_optimizer(config, lr, model)
    optimizer.build(model.trainable_variables)
    loss, grad_z, grads = tf.function(train_step_fn(model, optimizer, 1))(
        tf.constant(images1), tf.constant(images2))
    return (loss.numpy(), grad_z.numpy(), [g.numpy() for g in grads],
            model.get_weights())


def run_replicas(images1, images2, initial_weights, optimizer_name, num_replicas):
    config, lr = RUN_CONFIGS[optimizer_name]
    strategy = mirrored(num_replicas)
    with strategy.scope():
        model = make_model()
        model.set_weights(initial_weights)
        optimizer = optimizers.build_optimizer(config, lr, model)
        optimizer.build(model.trainable_variables)
    step = train_step_fn(model, optimizer, num_replicas)
    x1, x2 = shard(strategy, images1, images2)
    per_replica = local(strategy, tf.function(
        lambda a, b: strategy.run(step, args=(a, b)))(x1, x2))
    batch = len(images1) // num_replicas
    loss = np.mean([r[0] for r in per_replica])
    # Reassemble d loss / d z in the one-device row order: all view 1, then view 2.
    grad_z = np.concatenate([r[1][:batch] for r in per_replica]
                            + [r[1][batch:] for r in per_replica])
    grads = [np.sum(g, axis=0) for g in zip(*[r[2] for r in per_replica])]
    return loss, grad_z, grads, model.get_weights()


def assert_close(got, want, rtol):
    """Elementwise, relative to the largest magnitude of `want`."""
    np.testing.assert_allclose(got, want, rtol=rtol,
                               atol=rtol * max(np.abs(want).max(), 1e-12))


def model_inputs():
    rng = np.random.default_rng(7)
    images1 = rng.uniform(size=(8, 6, 6, 3)).astype(np.float32)
    images2 = np.clip(images1 + 0.2 * rng.standard_normal(images1.shape), 0, 1)
    initial_weights = make_model().get_weights()
    return images1, images2.astype(np.float32), initial_weights


@pytest.mark.parametrize("num_replicas, optimizer_name", [
    (2, "lars"), (4, "lars"), (2, "momentum"), (4, "momentum"),
    (2, "loss_scaled_momentum")])
def test_model_gradients_and_step_match_one_device(num_replicas, optimizer_name):
    images1, images2, initial_weights = model_inputs()
    one = run_one_device(images1, images2, initial_weights, optimizer_name)
    many = run_replicas(images1, images2, initial_weights, optimizer_name, num_replicas)

    np.testing.assert_allclose(many[0], one[0], rtol=1e-5)
    assert_close(many[1], one[1], rtol=1e-4)
    for got, want in zip(many[2], one[2]):
        assert_close(got, want, rtol=1e-4)
    # Weights after the step (BN moving statistics included: synced BN), compared
    # through the update so that small LARS steps are not hidden by the weights.
    for got, want, start in zip(many[3], one[3], initial_weights):
        assert np.abs(want - start).max() > 0
        assert_close(got - start, want - start, rtol=1e-3)


def test_cut_gather_gradient_is_detected(monkeypatch):
    """stop_gradient on the gathered negatives (the lightly #1528 / solo-learn #253
    bug class) leaves the loss unchanged but must break the gradient equality."""
    images1, images2, initial_weights = model_inputs()
    one = run_one_device(images1, images2, initial_weights, "momentum")

    gather = cross_replica.cross_replica_concat
    monkeypatch.setattr(cross_replica, "cross_replica_concat",
                        lambda t: tf.nest.map_structure(tf.stop_gradient, gather(t)))
    cut = run_replicas(images1, images2, initial_weights, "momentum", 2)

    np.testing.assert_allclose(cut[0], one[0], rtol=1e-5)
    relative_error = max(np.abs(g - w).max() / np.abs(w).max()
                         for g, w in zip(cut[2], one[2]))
    assert relative_error > 1e-2, relative_error
    with pytest.raises(AssertionError):
        assert_close(cut[1], one[1], rtol=1e-4)
