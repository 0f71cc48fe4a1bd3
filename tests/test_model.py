"""SimCLRModel: outputs per mode, stop-gradient, freezing, sync BN, checkpoints, assembly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from testutil import mirrored
from tf_simclr.config import Config
from tf_simclr.models import simclr as model_lib
from tf_simclr.models.heads import ProjectionHead, SupervisedHead
from tf_simclr.models.layers import batch_norm
from tf_simclr.models.resnet import ENDPOINTS, ResNet
from tf_simclr.models.simclr import SimCLRModel, build_model, zero_init_logits_layer
from tf_simclr.train.checkpointing import restore_pretrained

SIZE = 16
FEATURES = 64  # ResNet-18 at width 1/8


def _model(num_classes=10, train_mode="pretrain", mode="nonlinear", num_layers=3, selector=0,
           fine_tune_after_block=-1, global_bn=True, depth=18, build=True):
    model = SimCLRModel(
        ResNet(depth, width_multiplier=0.125, cifar_stem=True, global_bn=global_bn),
        ProjectionHead(mode=mode, out_dim=16, num_layers=num_layers, global_bn=global_bn,
                       name="projection_head"),
        SupervisedHead(num_classes, name="supervised_head") if num_classes else None,
        train_mode=train_mode, ft_proj_selector=selector,
        fine_tune_after_block=fine_tune_after_block)
    if build:
        model.build((None, SIZE, SIZE, 3))
    return model


def _images(batch=8, seed=0):
    return tf.random.uniform((batch, SIZE, SIZE, 3), seed=seed)


def _labels(batch=8, classes=10):
    return tf.one_hot(tf.range(batch) % classes, classes)


def _moving_stats(layer):
    return [v.numpy().copy() for v in layer.weights if "moving" in v.path]


def _cross_entropy(labels, logits):
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))


@pytest.mark.parametrize("num_classes", [10, 0])
def test_pretrain_outputs(num_classes):
    outputs = _model(num_classes)(_images(), training=True)
    expected = list(ENDPOINTS) + ["proj_head_input", "proj_head_output"]
    assert list(outputs) == expected + ["logits_sup"] * bool(num_classes)
    assert outputs["proj_head_input"] is outputs["final_avg_pool"]
    assert outputs["proj_head_output"].shape == (8, 16)
    assert outputs["proj_head_output"].dtype == tf.float32
    if num_classes:
        assert outputs["logits_sup"].shape == (8, 10)


@pytest.mark.parametrize("mode, num_layers, selector", [
    ("nonlinear", 3, 0), ("nonlinear", 3, 1), ("nonlinear", 3, 2), ("nonlinear", 3, -1),
    ("nonlinear", 2, -2), ("linear", 3, 1), ("linear", 3, -2), ("none", 3, -1)])
def test_finetune_outputs_and_trainable_projection_layers(mode, num_layers, selector):
    model = _model(3, "finetune", mode, num_layers, selector)
    count = model.projection_head.num_linear_layers + 1
    index = selector % count
    with tf.GradientTape() as tape:
        outputs = model(_images(), training=True)
        loss = _cross_entropy(_labels(8, 3), outputs["logits_sup"])
    assert outputs["logits_sup"].shape == (8, 3)
    assert outputs["proj_head_input"].shape == (8, FEATURES)
    assert ("proj_head_output" in outputs) == (index == count - 1)
    # Kept layers (before the selector) train; later ones never run and are frozen.
    kept = model.projection_head.linear_layers[:index]
    assert all(layer.trainable for layer in kept)
    assert not any(layer.trainable for layer in model.projection_head.linear_layers[index:])
    head_vars = [v for layer in kept for v in layer.trainable_weights]
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in tape.gradient(loss, head_vars))
    assert len(model.trainable_variables) == (len(model.encoder.trainable_variables)
                                              + len(head_vars) + 2)


def test_linear_and_none_heads_in_pretraining():
    linear = _model(mode="linear")(_images(), training=True)
    assert linear["proj_head_output"].shape == (8, 16)
    none = _model(mode="none")(_images(), training=True)
    np.testing.assert_array_equal(none["proj_head_output"], none["final_avg_pool"])


def test_online_linear_head_does_not_train_encoder_or_projection_head():
    model = _model(10)
    encoder_and_projection = model.encoder.weights + model.projection_head.weights
    watched = [v.value for v in encoder_and_projection]  # incl. non-trainable BN stats
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(watched)
        outputs = model(_images(), training=True)
        supervised = _cross_entropy(_labels(), outputs["logits_sup"])
        contrastive_stand_in = tf.reduce_sum(outputs["proj_head_output"] ** 2)
        total_loss = contrastive_stand_in + supervised
    zero = tf.UnconnectedGradients.ZERO
    for grad in tape.gradient(supervised, watched, unconnected_gradients=zero):
        np.testing.assert_array_equal(grad.numpy(), 0.0)
    head_grads = tape.gradient(supervised, model.supervised_head.trainable_variables)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in head_grads)
    # The encoder does learn from the projection output, and only from it.
    alone = tape.gradient(contrastive_stand_in, model.encoder.trainable_variables)
    total = tape.gradient(total_loss, model.encoder.trainable_variables)
    assert any(float(tf.reduce_max(tf.abs(g))) > 0 for g in alone)
    for a, b in zip(alone, total):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_linear_evaluation_freezes_the_whole_encoder():
    model = _model(3, "finetune", fine_tune_after_block=4, selector=0)
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for v in model.supervised_head.trainable_variables}
    assert model.encoder.trainable_variables == []
    before = _moving_stats(model.encoder) + _moving_stats(model.projection_head)
    images = _images()
    outputs = model(images, training=True)
    after = _moving_stats(model.encoder) + _moving_stats(model.projection_head)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(outputs["final_avg_pool"],
                               model(images, training=False)["final_avg_pool"], atol=1e-6)


def test_linear_evaluation_with_a_kept_projection_layer_trains_that_layer():
    model = _model(3, "finetune", fine_tune_after_block=4, selector=1)
    layer_0 = model.projection_head.linear_layers[0]
    assert {id(v) for v in model.trainable_variables} == {
        id(v) for v in model.supervised_head.trainable_variables + layer_0.trainable_weights}
    before = _moving_stats(layer_0)
    model(_images(), training=True)
    assert all(not np.array_equal(a, b) for a, b in zip(_moving_stats(layer_0), before))


def _batch_norms(layer):
    return [sublayer for sublayer in layer._flatten_layers(include_self=False)
            if isinstance(sublayer, keras.layers.BatchNormalization)]


def _local(strategy, value):
    return np.concatenate([t.numpy() for t in strategy.experimental_local_results(value)])


def test_synchronized_batch_norm_on_two_replicas_equals_one_device():
    # Two halves with different statistics, so that local BN would visibly differ
    # (the control test below shows it does).
    images = tf.concat([_images(4, seed=1), 3.0 * _images(4, seed=2) + 1.0], axis=0)
    reference = _model(global_bn=True)
    strategy = mirrored(2)
    with strategy.scope():
        replicated = _model(global_bn=True)
    replicated.set_weights(reference.get_weights())
    reference_outputs = reference(images, training=True)
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: images[4 * context.replica_id_in_sync_group:][:4])

    @tf.function
    def step(batch):
        return strategy.run(lambda x: replicated(x, training=True), args=(batch,))

    outputs = step(inputs)
    for key in ("block_group1", "final_avg_pool", "proj_head_output", "logits_sup"):
        np.testing.assert_allclose(_local(strategy, outputs[key]), reference_outputs[key],
                                   atol=2e-5, err_msg=key)
    moving = [(r, v) for r, v in zip(reference.weights, replicated.weights)
              if "moving" in v.path]
    assert len(moving) == 2 * len(_batch_norms(reference)) > 0
    for r, v in moving:
        for replica in strategy.experimental_local_results(v.value):
            np.testing.assert_allclose(replica.numpy(), r.numpy(), atol=2e-5, err_msg=v.path)


@pytest.mark.parametrize("synchronized", [True, False])
def test_batch_norm_statistics_on_two_replicas(synchronized):
    # The control for the test above, on the BN layer every model layer uses: with
    # synchronized=False each replica normalises by its own half, which differs.
    images = tf.concat([_images(4, seed=1), 3.0 * _images(4, seed=2) + 1.0], axis=0)
    strategy = mirrored(2)
    reference = batch_norm(0.9, synchronized)
    with strategy.scope():
        replicated = batch_norm(0.9, synchronized)
    reference.build(images.shape)
    replicated.build(images.shape)
    expected = reference(images, training=True)
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: images[4 * context.replica_id_in_sync_group:][:4])
    step = tf.function(lambda x: strategy.run(lambda y: replicated(y, training=True),
                                              args=(x,)))
    outputs = _local(strategy, step(inputs))
    stats = [(replica.numpy(), r.numpy())
             for r, v in ((reference.moving_mean, replicated.moving_mean),
                          (reference.moving_variance, replicated.moving_variance))
             for replica in strategy.experimental_local_results(v.value)]
    same = [np.allclose(outputs, expected, atol=1e-5)] + [
        np.allclose(a, b, atol=1e-6) for a, b in stats]
    assert all(same) if synchronized else not any(same)


def _checkpoint_keys(path):
    return [name for name, _ in tf.train.list_variables(path)
            if name.startswith("model/")]


def test_checkpoint_holds_every_model_variable_under_its_attribute_path(tmp_path):
    # Layers kept only in Python lists would be missing here (Keras 3 does not expose
    # them to tf.train.Checkpoint); every block and head layer is an attribute.
    model = SimCLRModel(
        ResNet(50, width_multiplier=0.0625, sk_ratio=0.0625, se_ratio=0.25),
        ProjectionHead(num_layers=2, out_dim=8), SupervisedHead(5))
    model.build((None, 32, 32, 3))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    keys = _checkpoint_keys(path)
    assert len(keys) == len(model.variables) == len(set(keys))
    assert ("model/encoder/block_group3/block6/conv2/mix_expand/_kernel/.ATTRIBUTES/"
            "VARIABLE_VALUE") in keys
    assert "model/projection_head/layer_1/bn/gamma/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/supervised_head/dense/bias/.ATTRIBUTES/VARIABLE_VALUE" in keys


@pytest.mark.parametrize("fine_tune_after_block", [-1, 4])
def test_finetune_restores_encoder_and_projection_head_but_not_the_classifier(
        tmp_path, fine_tune_after_block):
    pretrained = _model(10)
    pretrained(_images(), training=True)  # moving statistics away from their init
    checkpoint = tf.train.Checkpoint(model=pretrained, step=tf.Variable(7))
    prefix = checkpoint.save(str(tmp_path / "ckpt"))

    # Frozen (non-trainable) encoder variables are restored all the same.
    finetune = _model(3, "finetune", selector=1, fine_tune_after_block=fine_tune_after_block)
    classifier_before = [v.numpy().copy() for v in finetune.supervised_head.weights]
    assert any(not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(pretrained.encoder.weights, finetune.encoder.weights))
    # A checkpoint prefix, or a model_dir (its latest checkpoint).
    status = restore_pretrained(finetune, prefix if fine_tune_after_block == 4 else str(tmp_path))
    status.assert_existing_objects_matched()
    for part in ("encoder", "projection_head"):
        source, target = getattr(pretrained, part), getattr(finetune, part)
        assert len(source.weights) == len(target.weights) > 0
        for a, b in zip(source.weights, target.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert finetune.supervised_head.dense.kernel.shape == (FEATURES, 3)
    assert pretrained.supervised_head.dense.kernel.shape == (FEATURES, 10)
    for before, variable in zip(classifier_before, finetune.supervised_head.weights):
        np.testing.assert_array_equal(variable.numpy(), before)


def test_restore_pretrained_rejects_another_architecture_and_missing_checkpoints(tmp_path):
    path = tf.train.Checkpoint(model=_model(10)).save(str(tmp_path / "ckpt"))
    deeper = _model(3, "finetune", depth=34)
    with pytest.raises(ValueError, match="does not hold every encoder"):
        restore_pretrained(deeper, path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="without checkpoints"):
        restore_pretrained(_model(3, "finetune"), str(empty))
    with pytest.raises(ValueError, match="unbuilt"):
        restore_pretrained(_model(3, "finetune", build=False), path)


def test_zero_init_logits_layer_zeroes_a_built_classifier():
    model = _model(3, "finetune")
    zero_init_logits_layer(model)
    np.testing.assert_array_equal(model(_images(), training=False)["logits_sup"].numpy(), 0.0)
    assert float(tf.reduce_max(tf.abs(model.encoder.stem.conv.kernel))) > 0
    with pytest.raises(ValueError, match="supervised_head=None"):
        zero_init_logits_layer(_model(0))


def _config(**fields):
    return Config().replace(**{**dict(image_size=32, resnet_depth=18, width_multiplier=0.125),
                               **fields})


def test_build_model_maps_every_config_field():
    config = _config(resnet_depth=34, width_multiplier=0.25, sk_ratio=0.0625, se_ratio=0.5,
                     global_bn=False, batch_norm_decay=0.95, proj_head_mode="nonlinear",
                     proj_out_dim=32, num_proj_layers=2, ft_proj_selector=-2,
                     train_mode="finetune", fine_tune_after_block=2, checkpoint="/unused")
    model = build_model(config, 7)
    assert model.built
    encoder = model.encoder
    assert (encoder.depth, encoder.width_multiplier, encoder.cifar_stem) == (34, 0.25, True)
    assert (encoder.sk_ratio, encoder.se_ratio, encoder.global_bn) == (0.0625, 0.5, False)
    assert encoder.batch_norm_decay == 0.95 and encoder.frozen_through == 2
    head = model.projection_head
    assert (head.mode, head.out_dim, head.num_layers) == ("nonlinear", 32, 2)
    assert head.linear_layers[0].bn.momentum == 0.95
    assert not head.linear_layers[0].bn.synchronized
    assert model.supervised_head.num_classes == 7
    assert (model.train_mode, model.ft_proj_selector, model.fine_tune_after_block) == (
        "finetune", -2, 2)
    assert build_model(_config(image_size=64), 0).encoder.cifar_stem is False


@pytest.mark.parametrize("fields, num_classes, has_head", [
    ({}, 10, True), ({}, 0, False), (dict(lineareval_while_pretraining=False), 10, False)])
def test_build_model_creates_the_supervised_head_only_when_it_trains(fields, num_classes,
                                                                     has_head):
    model = build_model(_config(**fields), num_classes)
    assert (model.supervised_head is not None) == has_head
    assert ("logits_sup" in model(_images(2), training=False)) == has_head


@pytest.mark.parametrize("precision, compute_dtype", [
    ("mixed_bfloat16", tf.bfloat16), ("mixed_float16", tf.float16)])
def test_mixed_precision_keeps_float32_variables_and_loss_inputs(precision, compute_dtype):
    # mixed_float16 is rejected with LARS by the config; the trainer scales its loss.
    model = build_model(_config(precision=precision, optimizer="momentum",
                                sk_ratio=0.0625, se_ratio=0.25), 10)
    assert {v.dtype for v in model.weights} == {"float32"}
    with tf.GradientTape() as tape:
        outputs = model(_images(4), training=True)
        loss = (tf.reduce_sum(outputs["proj_head_output"] ** 2)
                + _cross_entropy(_labels(4), outputs["logits_sup"]))
    assert outputs["block_group1"].dtype == compute_dtype
    assert outputs["proj_head_output"].dtype == tf.float32
    assert outputs["logits_sup"].dtype == tf.float32
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and g.dtype == tf.float32 for g in grads)
    assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)


def _stage_moving_stats(model):
    return [_moving_stats(stage) for stage in model.encoder._stages()]


@pytest.mark.parametrize("fine_tune_after_block", [4, 2, 0])
def test_finetune_freezing_from_config_under_tf_function(fine_tune_after_block):
    # What the training loop does: build_model + a traced step with training=True.
    config = _config(train_mode="finetune", fine_tune_after_block=fine_tune_after_block,
                     checkpoint="/unused", global_bn=True)
    model = build_model(config, 3)
    encoder = model.encoder
    trainable_stages = encoder._stages()[fine_tune_after_block + 1:]
    assert {id(v) for v in encoder.trainable_variables} == {
        id(v) for stage in trainable_stages for v in stage.trainable_weights}
    if fine_tune_after_block == 4:
        assert encoder.trainable_variables == []
        assert {id(v) for v in model.trainable_variables} == {
            id(v) for v in model.supervised_head.trainable_variables}
    images = _images()

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = _cross_entropy(_labels(8, 3), outputs["logits_sup"])
        return outputs, tape.gradient(loss, model.trainable_variables)

    before = _stage_moving_stats(model)
    outputs, grads = step(images)
    after = _stage_moving_stats(model)
    for index, (a, b) in enumerate(zip(after, before)):
        unchanged = all(np.array_equal(x, y) for x, y in zip(a, b))
        assert unchanged == (index <= fine_tune_after_block), index
    assert all(g is not None for g in grads)
    if fine_tune_after_block >= 0:
        # Frozen stages ran on the moving statistics, as in inference.
        key = "initial_max_pool" if fine_tune_after_block == 0 else (
            f"block_group{fine_tune_after_block}")
        np.testing.assert_allclose(outputs[key], model(images, training=False)[key],
                                   atol=1e-6)


def test_get_config_round_trip():
    model = _model(4, "finetune", mode="linear", selector=-1, fine_tune_after_block=3,
                   build=False)
    config = model.get_config()
    clone = SimCLRModel.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.encoder, ResNet) and clone.encoder.frozen_through == 3
    assert clone.projection_head.mode == "linear" and clone.supervised_head.num_classes == 4
    no_head = _model(0, build=False)
    assert SimCLRModel.from_config(no_head.get_config()).supervised_head is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_mode="linear_eval"), "train_mode='linear_eval'"),
    (dict(fine_tune_after_block=2), "fine_tune_after_block=2 applies"),
    (dict(train_mode="finetune", fine_tune_after_block=5), "fine_tune_after_block=5"),
    (dict(train_mode="finetune", supervised_head=None), "needs a supervised_head"),
    (dict(lineareval_while_pretraining=False), "online linear classifier"),
    (dict(ft_proj_selector=4), "ft_proj_selector=4")])
def test_bad_arguments_raise_value_error(kwargs, message):
    parts = dict(encoder=ResNet(18), projection_head=ProjectionHead(),
                 supervised_head=SupervisedHead(10))
    with pytest.raises(ValueError, match=message):
        SimCLRModel(**{**parts, **kwargs})


def test_build_model_rejects_finetuning_without_classes():
    with pytest.raises(ValueError, match="num_classes=0"):
        build_model(_config(train_mode="finetune", checkpoint="/unused"), 0)
    with pytest.raises(ValueError, match="num_classes=-1"):
        model_lib.build_model(_config(), -1)
