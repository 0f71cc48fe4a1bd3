"""ResNet encoders: parameter counts, endpoint shapes, init, freezing, SK/SE training."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_simclr.models import layers, resnet
from tf_simclr.models.resnet import ResNet


def _count_params(**kwargs):
    """(all weights incl. BN moving stats, trainable weights) of a built ResNet.

    The StatelessScope creates variables with their shapes but defers (here: skips)
    their initialisation, so even ResNet-152 3x costs no memory.
    """
    with keras.StatelessScope(initialize_variables=False):
        model = ResNet(**kwargs)
        model.build((None, 224, 224, 3))
        total = sum(math.prod(v.shape) for v in model.weights)
        trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    return total, trainable


def _expected_params(depth, width, cifar_stem=False):
    """Independent count for plain (non-SK, non-SE) ResNets: conv kernels + 4 per BN channel."""
    block_type, blocks = resnet.DEPTHS[depth]
    expansion = 4 if block_type == "bottleneck" else 1
    f0 = round(64 * width)
    kernel = 3 if cifar_stem else 7
    total = kernel * kernel * 3 * f0 + 4 * f0
    in_c = f0
    for base, num_blocks in zip((64, 128, 256, 512), blocks):
        f = round(base * width)
        out = f * expansion
        for index in range(num_blocks):
            if index == 0:
                total += in_c * out + 4 * out  # projection shortcut
            if expansion == 4:
                total += in_c * f + 4 * f + 9 * f * f + 4 * f + f * out + 4 * out
            else:
                total += 9 * in_c * f + 4 * f + 9 * f * f + 4 * f
            in_c = out
    return total


@pytest.mark.parametrize("depth, width, cifar_stem", [
    (18, 1.0, True), (34, 0.5, False), (50, 1.0, False), (50, 0.3, True), (101, 2.0, False),
    (152, 1.0, False), (200, 0.25, False)])
def test_parameter_count_equals_independent_formula(depth, width, cifar_stem):
    total, _ = _count_params(depth=depth, width_multiplier=width, cifar_stem=cifar_stem)
    assert total == _expected_params(depth, width, cifar_stem)


def test_resnet50_1x_matches_the_official_colab_count():
    # The colab counts checkpoint variables, i.e. including BN moving mean/variance:
    # 23.56M. Trainable weights alone are 23.51M (torchvision's 23,508,032 without fc).
    assert _count_params(depth=50) == (23_561_152, 23_508_032)


def test_stateless_count_equals_count_of_allocated_model():
    model = ResNet(18, width_multiplier=0.5)
    model.build((None, 32, 32, 3))
    allocated = sum(int(np.prod(v.numpy().shape)) for v in model.weights)
    assert _count_params(depth=18, width_multiplier=0.5)[0] == allocated


@pytest.mark.parametrize("depth, width, sk_ratio, millions", [
    # Official README / paper (rounded to 1M); counts include BN moving statistics.
    (50, 1, 0.0, 24), (50, 2, 0.0, 94), (50, 4, 0.0, 375), (50, 1, 0.0625, 35),
    (50, 2, 0.0625, 140), (101, 1, 0.0, 43), (101, 1, 0.0625, 65), (101, 2, 0.0, 170),
    (101, 2, 0.0625, 257), (152, 1, 0.0, 58), (152, 1, 0.0625, 89), (152, 2, 0.0, 233),
    (152, 2, 0.0625, 354), (152, 3, 0.0625, 795)])
def test_parameter_counts_match_official_readme(depth, width, sk_ratio, millions):
    total, _ = _count_params(depth=depth, width_multiplier=width, sk_ratio=sk_ratio)
    assert total == pytest.approx(millions * 1e6, rel=0.02)


def _expected_shapes(depth, width, cifar_stem, size, batch=2):
    expansion = 4 if resnet.DEPTHS[depth][0] == "bottleneck" else 1
    f = [max(1, round(base * width)) for base in (64, 128, 256, 512)]
    conv_size = size if cifar_stem else math.ceil(size / 2)
    pool_size = size if cifar_stem else math.ceil(size / 4)
    group_sizes = [pool_size] + [math.ceil(pool_size / 2 ** k) for k in (1, 2, 3)]
    shapes = {"initial_conv": (batch, conv_size, conv_size, f[0]),
              "initial_max_pool": (batch, pool_size, pool_size, f[0])}
    for k in range(4):
        shapes[f"block_group{k + 1}"] = (batch, group_sizes[k], group_sizes[k], f[k] * expansion)
    shapes["final_avg_pool"] = (batch, f[3] * expansion)
    return shapes


# Every depth with both stems, except ResNet-152 (CIFAR stem: in the wide-network
# test below) and ResNet-200 with the CIFAR stem (same blocks; the deepest symbolic
# builds cost ~5 s each on 2 cores).
@pytest.mark.parametrize("depth, cifar_stem, size", [
    (depth, cifar_stem, size) for depth in sorted(resnet.DEPTHS)
    for cifar_stem, size in ((True, 32), (False, 224)) if not (cifar_stem and depth >= 152)])
def test_endpoint_shapes_every_depth(depth, cifar_stem, size):
    # Symbolic call of the real layers at full width: shapes only, nothing allocated.
    with keras.StatelessScope(initialize_variables=False):
        model = ResNet(depth, cifar_stem=cifar_stem)
        model.build((None, size, size, 3))
        outputs = model(keras.KerasTensor((2, size, size, 3)))
    assert list(outputs) == list(resnet.ENDPOINTS)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == _expected_shapes(
        depth, 1.0, cifar_stem, size)


@pytest.mark.parametrize("depth, width, cifar_stem, size, sk_ratio, se_ratio", [
    (18, 0.25, True, 32, 0.0, 0.0), (18, 0.5, True, 32, 0.0, 0.0),
    (18, 1.0, True, 32, 0.0, 0.0), (18, 0.3, False, 40, 0.0, 0.0),
    (34, 0.125, False, 50, 0.0625, 0.0), (18, 0.25, False, 64, 0.0625, 0.25),
    (50, 0.125, False, 64, 0.0625, 0.0), (50, 0.1, True, 32, 0.0, 0.25),
    (50, 0.0625, False, 64, 0.0625, 0.25), (50, 0.375, False, 33, 0.0, 0.0)])
def test_endpoint_shapes_widths_and_variants(depth, width, cifar_stem, size, sk_ratio, se_ratio):
    model = ResNet(depth, width_multiplier=width, cifar_stem=cifar_stem, sk_ratio=sk_ratio,
                   se_ratio=se_ratio)
    outputs = model(tf.random.uniform((2, size, size, 3)), training=True)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == _expected_shapes(
        depth, width, cifar_stem, size)


@pytest.mark.parametrize("depth, width, cifar_stem, size", [
    (18, 2.0, True, 32), (34, 4.0, False, 224), (50, 2.0, False, 128), (50, 4.0, True, 32),
    (152, 2.0, True, 32)])
def test_endpoint_shapes_wide_networks(depth, width, cifar_stem, size):
    with keras.StatelessScope(initialize_variables=False):
        model = ResNet(depth, width_multiplier=width, cifar_stem=cifar_stem)
        model.build((None, size, size, 3))
        outputs = model(keras.KerasTensor((2, size, size, 3)))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == _expected_shapes(
        depth, width, cifar_stem, size)


def test_official_resnet50_4x_endpoint_shapes_at_224():
    with keras.StatelessScope(initialize_variables=False):
        model = ResNet(50, width_multiplier=4)
        model.build((None, 224, 224, 3))
        outputs = model(keras.KerasTensor((1, 224, 224, 3)))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "initial_conv": (1, 112, 112, 256), "initial_max_pool": (1, 56, 56, 256),
        "block_group1": (1, 56, 56, 1024), "block_group2": (1, 28, 28, 2048),
        "block_group3": (1, 14, 14, 4096), "block_group4": (1, 7, 7, 8192),
        "final_avg_pool": (1, 8192)}
    assert model.feature_dim == 8192


def _batch_norms(layer):
    return [sublayer for sublayer in layer._flatten_layers(include_self=False)
            if isinstance(sublayer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("kwargs", [dict(depth=18), dict(depth=50, sk_ratio=0.0625, se_ratio=0.25)])
def test_only_the_last_batch_norm_of_each_block_starts_with_zero_gamma(kwargs):
    model = ResNet(width_multiplier=0.125, **kwargs)
    model.build((None, 32, 32, 3))
    blocks = [block for group in model.block_groups for block in group.blocks]
    assert len(blocks) == sum(resnet.DEPTHS[kwargs["depth"]][1])
    for block in blocks:
        last = block.bn3 if isinstance(block, resnet.BottleneckBlock) else block.bn2
        np.testing.assert_array_equal(last.gamma.numpy(), 0.0)
        for bn in _batch_norms(block):
            if bn is not last:
                np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    for bn in _batch_norms(model.stem):
        np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)


def test_fresh_blocks_without_projection_are_the_identity():
    # gamma = 0 on the last BN makes every residual branch output 0 (beta = 0), so a
    # block with an identity shortcut returns relu(x) = x for its post-ReLU input.
    model = ResNet(50, width_multiplier=0.125)
    model.build((None, 32, 32, 3))
    group = model.block_group2
    inputs = tf.random.uniform((2, 8, 8, 32))
    first = group.block1(inputs, training=False)
    assert float(tf.reduce_min(first)) >= 0.0
    for block in group.blocks[1:]:
        np.testing.assert_array_equal(block(first, training=False).numpy(), first.numpy())
    np.testing.assert_array_equal(group(inputs, training=False).numpy(), first.numpy())


def test_strided_convs_use_fixed_padding():
    # Fixed padding for a 3x3/2 conv pads one pixel on each side, so the output pixel
    # (0, 0) sees inputs (-1..1, -1..1); SAME padding would pad only after (0..2).
    conv = layers.conv(1, 3, 2)
    conv.build((None, None, None, 1))
    conv.kernel.assign(np.ones((3, 3, 1, 1), np.float32))
    image = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    out = layers.apply_conv(conv, tf.constant(image)).numpy()[0, :, :, 0]
    padded = np.pad(image[0, :, :, 0], 1)
    expected = np.array([[padded[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() for j in range(3)]
                         for i in range(3)])
    np.testing.assert_array_equal(out, expected)


def _moving_stats(layer):
    return [v.numpy().copy() for bn in _batch_norms(layer)
            for v in (bn.moving_mean, bn.moving_variance)]


@pytest.mark.parametrize("freeze_before_build", [True, False])
def test_freeze_through_block_2(freeze_before_build):
    model = ResNet(18, width_multiplier=0.125, cifar_stem=True)
    if freeze_before_build:
        model.freeze_through(2)
    model.build((None, 16, 16, 3))
    if not freeze_before_build:
        model.freeze_through(2)
    frozen = [model.stem, model.block_group1, model.block_group2]
    trainable = [model.block_group3, model.block_group4]
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for stage in trainable for v in stage.trainable_weights}
    assert all(not stage.trainable_weights for stage in frozen)

    images = tf.random.uniform((4, 16, 16, 3))
    frozen_before = [_moving_stats(stage) for stage in frozen]
    trainable_before = [_moving_stats(stage) for stage in trainable]
    # Watch the frozen weights explicitly: the tape skips non-trainable variables by
    # itself, which would make the stop_gradient check vacuous.
    frozen_vars = [v.value for stage in frozen for v in stage.weights]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(frozen_vars)
        outputs = model(images, training=True)
        loss = tf.reduce_sum(outputs["final_avg_pool"] ** 2)
    for stage, before in zip(frozen, frozen_before):
        for a, b in zip(_moving_stats(stage), before):
            np.testing.assert_array_equal(a, b)
    for stage, before in zip(trainable, trainable_before):
        assert any(not np.array_equal(a, b) for a, b in zip(_moving_stats(stage), before))
    # Frozen stages ran in inference mode: same block_group2 as training=False.
    np.testing.assert_allclose(outputs["block_group2"],
                               model(images, training=False)["block_group2"], atol=1e-6)
    # The stop_gradient at the boundary: nothing before it receives a gradient.
    assert all(g is None for g in tape.gradient(loss, frozen_vars))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_freeze_through_4_leaves_no_trainable_variable_and_unfreeze_restores_all():
    model = ResNet(18, width_multiplier=0.125, cifar_stem=True)
    model.build((None, 16, 16, 3))
    all_trainable = len(model.trainable_variables)
    model.freeze_through(4)
    assert model.trainable_variables == []
    before = _moving_stats(model)
    model(tf.random.uniform((4, 16, 16, 3)), training=True)
    for a, b in zip(_moving_stats(model), before):
        np.testing.assert_array_equal(a, b)
    model.freeze_through(-1)
    assert len(model.trainable_variables) == all_trainable
    with pytest.raises(ValueError, match="block=5"):
        model.freeze_through(5)


def _train(features_fn, variables, steps):
    """SGD-momentum steps of 4-class cross-entropy on 8 fixed images; returns the losses."""
    images = tf.random.uniform((8, 32, 32, 3), seed=1)
    labels = tf.constant([0, 1, 2, 3, 0, 1, 2, 3])
    classifier = keras.layers.Dense(4)
    classifier.build((None, features_fn(images).shape[-1]))
    variables = variables + classifier.trainable_variables
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(variables)
    losses = []
    for _ in range(steps):  # eager: tracing a deep network costs more than a few steps
        with tf.GradientTape() as tape:
            logits = classifier(features_fn(images))
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        losses.append(float(loss))
    return losses


def _assert_trained(losses, variables, initial, num_blocks):
    assert losses[-1] < 0.6 * losses[0]
    changed = {v.path: not np.array_equal(v.numpy(), w) for v, w in zip(variables, initial)}
    # Zero-init gammas open each branch after the first step; by now every weight has
    # moved, except SE "reduce" units whose ReLU is dead (their input starts at 0).
    assert [path for path, moved in changed.items() if not moved and "/se/" not in path] == []
    se_gate_biases = [path for path in changed if path.endswith("/se/expand/bias")]
    assert len(se_gate_biases) == num_blocks
    assert all(changed[path] for path in se_gate_biases)
    return {path.split("/")[-2] for path in changed}


def test_sk_and_se_bottleneck_block_trains():
    block = resnet.BottleneckBlock(8, 2, True, sk_ratio=0.0625, se_ratio=0.25,
                                   batch_norm_decay=0.9, global_bn=True, name="block")
    block.build((None, None, None, 3))
    variables = block.trainable_variables
    initial = [v.numpy().copy() for v in variables]
    losses = _train(lambda x: tf.reshape(block(x, training=True), (8, -1)), variables, steps=5)
    names = _assert_trained(losses, variables, initial, num_blocks=1)
    assert {"mix_reduce", "mix_expand", "reduce", "expand"} <= names  # SK and SE convs
    assert block.conv2.mid_filters == 32  # max(int(8 * 0.0625), 32)


@pytest.mark.parametrize("depth", [18, pytest.param(50, marks=pytest.mark.slow)])
def test_sk_and_se_networks_train(depth):
    encoder = ResNet(depth, width_multiplier=0.125, sk_ratio=0.0625, se_ratio=0.25)
    encoder.build((None, 32, 32, 3))
    variables = encoder.trainable_variables
    initial = [v.numpy().copy() for v in variables]
    losses = _train(lambda x: encoder(x, training=True)["final_avg_pool"], variables,
                    steps=3 if depth >= 50 else 5)
    names = _assert_trained(losses, variables, initial, sum(resnet.DEPTHS[depth][1]))
    assert "deep_conv1" in names  # the ResNet-D stem
    assert ({"mix_reduce", "mix_expand"} <= names) == (depth >= 50)  # SK convs


def test_get_config_round_trip():
    model = ResNet(101, width_multiplier=0.5, cifar_stem=True, sk_ratio=0.0625, se_ratio=0.25,
                   batch_norm_decay=0.99, global_bn=False, name="enc")
    config = model.get_config()
    clone = ResNet.from_config(config)
    assert clone.get_config() == config
    assert config["depth"] == 101 and config["width_multiplier"] == 0.5
    with keras.StatelessScope(initialize_variables=False):
        model.build((None, 32, 32, 3))
        clone.build((None, 32, 32, 3))
        assert [(v.path, v.shape) for v in clone.weights] == [
            (v.path, v.shape) for v in model.weights]
    assert all(not bn.synchronized and bn.momentum == 0.99 for bn in _batch_norms(clone))


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth=42), "depth=42"), (dict(depth=50, width_multiplier=0.0), "width_multiplier=0.0"),
    (dict(depth=50, width_multiplier=0.005), "width_multiplier=0.005"),
    (dict(depth=50, sk_ratio=-0.1), "sk_ratio=-0.1"),
    (dict(depth=50, se_ratio=2.0), "se_ratio=2.0"),
    (dict(depth=50, batch_norm_decay=1.0), "batch_norm_decay=1.0")])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**kwargs)
