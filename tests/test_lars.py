"""LARS against a NumPy reference of the official classic-momentum update."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from testutil import mirrored
from tf_simclr.train.lars import LARS
from tf_simclr.train.schedules import WarmUpAndCosineDecay


def numpy_lars(weights, grad_steps, lrs, momentum, weight_decay, eta, decay, adapt,
               nesterov=False):
    """Official update, float64: weights after len(grad_steps) steps."""
    weights = [np.asarray(w, np.float64).copy() for w in weights]
    velocity = [np.zeros_like(w) for w in weights]
    for grads, lr in zip(grad_steps, lrs):
        for i, (w, g) in enumerate(zip(weights, grads)):
            g = np.asarray(g, np.float64) + (weight_decay * w if decay[i] else 0.0)
            trust = 1.0
            if adapt[i]:
                w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
                if w_norm > 0 and g_norm > 0:
                    trust = eta * w_norm / g_norm
            velocity[i] = momentum * velocity[i] + lr * trust * g
            step = momentum * velocity[i] + lr * trust * g if nesterov else velocity[i]
            weights[i] = w - step
    return weights


def make_model():
    """dense (kernel, bias) -> bn (gamma, beta) -> head (kernel, bias), fixed paths.

    Paths are "net/<layer>/<variable>"; names are only "kernel", "gamma", ...
    """
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, name="dense"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.Dense(2, name="head"),
    ], name="net")
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


def random_grads(variables, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.shape).astype(np.float32) for v in variables]


def paths(model):
    return [v.path for v in model.trainable_variables]


def test_paths_of_the_fixture():
    assert paths(make_model()) == ["net/dense/kernel", "net/dense/bias", "net/bn/gamma",
                                   "net/bn/beta", "net/head/kernel", "net/head/bias"]


def test_one_step_matches_numpy():
    model = make_model()
    variables = model.trainable_variables
    start = [v.numpy() for v in variables]
    excluded = [variables[1], variables[2], variables[3], variables[5]]  # bias, bn
    opt = LARS(0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01,
               exclude_from_weight_decay=excluded)
    grads = random_grads(variables, 1)
    opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))

    decay = adapt = [True, False, False, False, True, False]
    want = numpy_lars(start, [grads], [0.5], 0.9, 0.1, 0.01, decay, adapt)
    for v, w in zip(variables, want):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-6, atol=1e-7)
    # Excluded variables take a plain SGD step; included ones a trust-scaled one.
    for i in (1, 2, 3, 5):
        np.testing.assert_allclose(start[i] - variables[i].numpy(), 0.5 * grads[i],
                                   rtol=1e-6)
    for i in (0, 4):
        assert not np.allclose(start[i] - variables[i].numpy(), 0.5 * grads[i],
                               rtol=1e-2)


@pytest.mark.parametrize("nesterov", [False, True])
def test_steps_with_momentum_and_schedule_match_numpy(nesterov):
    model = make_model()
    variables = model.trainable_variables
    start = [v.numpy() for v in variables]
    schedule = WarmUpAndCosineDecay(2.0, warmup_steps=2, total_steps=5)
    opt = LARS(schedule, momentum=0.8, weight_decay=1e-2,
               exclude_from_weight_decay=["bias", "/bn/"], nesterov=nesterov)
    grad_steps = [random_grads(variables, seed) for seed in (2, 3, 4, 5)]
    for grads in grad_steps:
        opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
    assert opt.iterations.numpy() == 4

    lrs = [float(schedule(step)) for step in range(4)]   # 0, 1, 2, 2 * (1 + cos(pi/3)) / 2
    np.testing.assert_allclose(lrs, [0.0, 1.0, 2.0, 1.5], rtol=1e-6)
    decay = adapt = [True, False, False, False, True, False]
    want = numpy_lars(start, grad_steps, lrs, 0.8, 1e-2, 1e-3, decay, adapt, nesterov)
    for v, w in zip(variables, want):
        np.testing.assert_allclose(v.numpy(), w, rtol=2e-6, atol=1e-7)


def test_decay_and_adaptation_exclusions_are_separate():
    model = make_model()
    variables = model.trainable_variables
    start = [v.numpy() for v in variables]
    # dense/kernel: adapted but not decayed; head/kernel: decayed but not adapted.
    opt = LARS(1.0, weight_decay=0.5, trust_coefficient=0.02,
               exclude_from_weight_decay=[variables[0], "bias", "bn"],
               exclude_from_layer_adaptation=[variables[4], "bias", "bn"])
    grads = random_grads(variables, 6)
    opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
    decay = [False, False, False, False, True, False]
    adapt = [True, False, False, False, False, False]
    want = numpy_lars(start, [grads], [1.0], 0.9, 0.5, 0.02, decay, adapt)
    for v, w in zip(variables, want):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-6, atol=1e-7)
    # head/kernel's step is exactly lr * (g + wd * w): decayed, no trust ratio.
    np.testing.assert_allclose(start[4] - variables[4].numpy(),
                               grads[4] + 0.5 * start[4], rtol=1e-6)


def test_patterns_match_path_not_name():
    model = make_model()
    variables = model.trainable_variables
    assert variables[4].name == "kernel"       # Keras 3: the layer is not in .name
    start = [v.numpy() for v in variables]
    opt = LARS(1.0, weight_decay=0.1, exclude_from_weight_decay=["/head/"])
    grads = random_grads(variables, 7)
    opt.apply_gradients(zip([tf.constant(g) for g in grads], variables))
    np.testing.assert_allclose(start[4] - variables[4].numpy(), grads[4], rtol=1e-6)
    assert not np.allclose(start[0] - variables[0].numpy(), grads[0], rtol=1e-2)
    with pytest.raises(ValueError, match="constructor"):
        opt.exclude_from_weight_decay(var_names=["head"])


def test_zero_weight_or_zero_gradient_gives_unit_trust():
    w = keras.Variable(np.zeros((3,), np.float32), name="w")
    v = keras.Variable(np.ones((3,), np.float32), name="v")
    opt = LARS(0.1, weight_decay=0.1)
    opt.apply_gradients([(tf.constant([1.0, 2.0, 3.0]), w), (tf.zeros(3), v)])
    np.testing.assert_allclose(w.numpy(), [-0.1, -0.2, -0.3], rtol=1e-6)  # |w| = 0
    # v: g = 0 + wd * v, so |g| > 0 and the trust ratio applies: 0.001 * |v| / |g|.
    np.testing.assert_allclose(v.numpy(), 1 - 0.1 * 0.01 * 0.1, rtol=1e-6)
    opt_no_decay = LARS(0.1)
    opt_no_decay.apply_gradients([(tf.zeros(3), v)])        # |g| = 0: no NaN, no step
    np.testing.assert_allclose(v.numpy(), 1 - 0.1 * 0.01 * 0.1, rtol=1e-6)


def test_exclusions_under_mirrored_strategy():
    strategy = mirrored(2)
    with strategy.scope():
        model = make_model()
        variables = model.trainable_variables
        # Identity for the BN variables, a path pattern for the biases.
        opt = LARS(0.5, weight_decay=0.1, trust_coefficient=0.01,
                   exclude_from_weight_decay=[variables[2], variables[3], "/bias$"])
        opt.build(variables)
    start = [v.numpy() for v in variables]
    grads_per_replica = [random_grads(variables, 8), random_grads(variables, 9)]
    per_replica_grads = [strategy.experimental_distribute_values_from_function(
        lambda ctx, i=i: tf.constant(grads_per_replica[ctx.replica_id_in_sync_group][i]))
        for i in range(len(variables))]

    @tf.function
    def step(grads):
        strategy.run(lambda g: opt.apply_gradients(zip(g, variables)), args=(grads,))

    step(per_replica_grads)
    summed = [a + b for a, b in zip(*grads_per_replica)]     # apply_gradients SUMs
    decay = adapt = [True, False, False, False, True, False]
    want = numpy_lars(start, [summed], [0.5], 0.9, 0.1, 0.01, decay, adapt)
    for v, w in zip(variables, want):
        for replica_value in strategy.experimental_local_results(v.value):
            np.testing.assert_allclose(replica_value.numpy(), w, rtol=1e-6, atol=1e-7)


def test_get_config_round_trip():
    model = make_model()
    schedule = WarmUpAndCosineDecay(0.3, 10, 100)
    opt = LARS(schedule, momentum=0.8, weight_decay=1e-4, trust_coefficient=0.002,
               exclude_from_weight_decay=[model.trainable_variables[2], "bias"],
               exclude_from_layer_adaptation=["bias"], nesterov=True)
    config = opt.get_config()
    assert config["exclude_from_weight_decay"] == ["bias", "^net/bn/gamma$"]
    assert config["exclude_from_layer_adaptation"] == ["bias"]
    assert (config["momentum"], config["weight_decay"], config["trust_coefficient"],
            config["nesterov"]) == (0.8, 1e-4, 0.002, True)
    restored = LARS.from_config(copy.deepcopy(config))  # from_config mutates its input
    assert restored.get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(revived) is LARS and revived.get_config() == config


def test_restored_config_excludes_the_same_variables():
    # A variable exclusion is saved as its exact path, so the restored optimizer
    # applies it to the rebuilt model with the same paths.
    original, rebuilt = make_model(), make_model()
    opt = LARS(0.5, weight_decay=0.1, trust_coefficient=0.01,
               exclude_from_weight_decay=[original.trainable_variables[4]])
    restored = LARS.from_config(opt.get_config())
    grads = random_grads(original.trainable_variables, 10)
    opt.apply_gradients(zip([tf.constant(g) for g in grads], original.trainable_variables))
    restored.apply_gradients(zip([tf.constant(g) for g in grads],
                                 rebuilt.trainable_variables))
    for a, b in zip(original.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_restores_momentum_and_iterations(tmp_path):
    def fresh():
        model = make_model()
        opt = LARS(0.5, weight_decay=0.1, exclude_from_weight_decay=["bias", "bn"])
        opt.build(model.trainable_variables)
        return model, opt

    model, opt = fresh()
    for seed in (11, 12):
        opt.apply_gradients(zip([tf.constant(g) for g in
                                 random_grads(model.trainable_variables, seed)],
                                model.trainable_variables))
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(tmp_path / "ckpt"))
    model2, opt2 = fresh()
    tf.train.Checkpoint(model=model2, optimizer=opt2).restore(path).assert_consumed()
    assert opt2.iterations.numpy() == 2
    grads = random_grads(model.trainable_variables, 13)
    for m, o in ((model, opt), (model2, opt2)):
        o.apply_gradients(zip([tf.constant(g) for g in grads], m.trainable_variables))
    for a, b in zip(model.get_weights(), model2.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(momentum=-0.1), "momentum=-0.1"),
    (dict(momentum=1.5), "momentum=1.5"),
    (dict(weight_decay=-1e-4), "weight_decay=-0.0001"),
    (dict(trust_coefficient=0.0), "trust_coefficient=0.0"),
    (dict(exclude_from_weight_decay=[3]), "contains 3"),
    (dict(exclude_from_weight_decay="bias"), "single item"),
    (dict(exclude_from_layer_adaptation=[None]), "contains None"),
    (dict(exclude_from_weight_decay=["bias("]), "not a valid regex"),
])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LARS(0.1, **kwargs)
