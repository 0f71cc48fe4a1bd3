"""Tests of the whole augmentation (SimCLRAugment, tf_simclr.augment.policy), its
per-image CPU chain (fused) and code-path choice (plan): every layer eagerly,
under tf.function, in tf.data and in strategy.run on two replicas, all giving the
same views for the same seed; bad inputs and arguments.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from augment_testutil import (
    BATCH,
    BATCH_2,
    LAYERS,
    assert_round_trips,
    call,
    np_blur,
    seed,
    uint8_images,
)
from testutil import cpu_devices
from tf_simclr.augment import (
    CenterCropResize,
    ColorDistortion,
    RandomFlip,
    RandomGaussianBlur,
    RandomResizedCrop,
    SimCLRAugment,
    plan,
)

# --------------------------------------------------------------------------------------
# The whole augmentation: outputs, inputs, seeds.


def test_simclr_augment_composes_its_parts():
    layer = SimCLRAugment(16)
    parameters = layer.sample_parameters(BATCH.shape, seed(21))
    out = layer.apply_parameters(BATCH, parameters).numpy()
    expected = RandomResizedCrop(16).apply_parameters(BATCH, parameters["crop"])
    expected = RandomFlip().apply_parameters(expected, parameters["flip"])
    expected = ColorDistortion().apply_parameters(expected, parameters["color"])
    expected = RandomGaussianBlur(kernel_size=1).apply_parameters(expected, parameters["blur"])
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("crop", [True, False])
def test_large_views_run_image_by_image_and_equal_the_composed_parts(crop):
    """Above 64 x 64 SimCLRAugment runs all its ops per image in one loop."""
    side = 72
    assert side * side > plan.BATCHED_PIXELS_MAX
    images = uint8_images((4, 80 if crop else side, 80 if crop else side, 3), rng_seed=7)
    layer = SimCLRAugment(side, crop=crop)
    parameters = layer.sample_parameters(images.shape, seed(22))
    parameters["blur"]["blur"] = tf.constant([True, True, False, True])
    parameters["color"]["jitter"] = tf.constant([True, False, True, True])
    out = layer.apply_parameters(images, parameters).numpy()
    if crop:
        expected = RandomResizedCrop(side).apply_parameters(images, parameters["crop"])
    else:
        expected = images / np.float32(255.0)
    expected = RandomFlip().apply_parameters(expected, parameters["flip"])
    expected = ColorDistortion().apply_parameters(expected, parameters["color"])
    expected = np.stack([
        np_blur(view, sigma, layer.blur.radius(side)) if chosen else view
        for view, chosen, sigma in zip(expected.numpy(), parameters["blur"]["blur"].numpy(),
                                       parameters["blur"]["sigma"].numpy())])
    np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.parametrize("crop", [True, False])
def test_vectorized_views_equal_the_default_views_and_compile_with_xla(crop):
    """vectorized=True: the same views, every shape static (XLA, as on a TPU)."""
    side = 72  # above 64 x 64, where the default path goes image by image
    images = uint8_images((6, 80 if crop else side, 80 if crop else side, 3), rng_seed=11)
    default = SimCLRAugment(side, crop=crop)
    vectorized = SimCLRAugment(side, crop=crop, vectorized=True)
    parameters = default.sample_parameters(images.shape, seed(23))
    parameters["blur"]["blur"] = tf.constant([True, True, False, True, False, True])
    parameters["color"]["jitter"] = tf.constant([True, False, True, True, True, True])
    parameters["color"]["grayscale"] = tf.constant([False, False, True, False, True, False])
    expected = default.apply_parameters(images, parameters).numpy()
    np.testing.assert_allclose(vectorized.apply_parameters(images, parameters).numpy(),
                               expected, atol=2e-5)
    compiled = tf.function(vectorized.apply_parameters, jit_compile=True)
    np.testing.assert_allclose(compiled(images, parameters).numpy(), expected, atol=2e-5)


def test_vectorized_small_views_compile_with_xla():
    layer = SimCLRAugment(16, vectorized=True)
    parameters = layer.sample_parameters(BATCH.shape, seed(24))
    expected = SimCLRAugment(16).apply_parameters(BATCH, parameters).numpy()
    compiled = tf.function(layer.apply_parameters, jit_compile=True)
    np.testing.assert_allclose(compiled(BATCH, parameters).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("side", [28, 40])
@pytest.mark.parametrize("channels", [1, 3])
def test_default_views_of_inputs_up_to_32_px_have_no_per_image_loop(side, channels):
    """At most 32 x 32 (CIFAR, MNIST) crop, color and blur are all batched; the crop
    still equals tf.image.resize of each explicit crop. Larger inputs crop per image."""
    images = uint8_images((8, side, side, channels), rng_seed=12)
    layer = SimCLRAugment(side)
    parameters = layer.sample_parameters(images.shape, seed(25))
    graph = tf.function(layer.apply_parameters).get_concrete_function(
        images, parameters).graph
    loops = [op.name for op in graph.get_operations() if "While" in op.type]
    assert bool(loops) == (side * side > plan.MATRIX_CROP_PIXELS_MAX), loops
    views = RandomResizedCrop(side).apply_parameters(images, parameters["crop"]).numpy()
    assert views.shape == (8, side, side, 3)
    for image, view, (y, x, h, w) in zip(images, views, parameters["crop"]["boxes"].numpy()):
        crop = image[None, y:y + h, x:x + w].astype(np.float32) / 255.0
        expected = tf.image.resize(crop, [side, side], "bicubic")[0].numpy()
        np.testing.assert_allclose(view, np.broadcast_to(expected, view.shape), atol=2e-6)


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_output_is_float32_in_unit_range(dtype):
    images = BATCH if dtype == "uint8" else (BATCH / 255.0).astype(dtype)
    out = SimCLRAugment(16)(images, seed=seed(1))
    assert out.dtype == tf.float32 and out.shape == (4, 16, 16, 3)
    out = out.numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0.05


def test_uint8_and_float_inputs_give_the_same_views():
    a = SimCLRAugment(16)(BATCH, seed=seed(2)).numpy()
    b = SimCLRAugment(16)(BATCH.astype(np.float32) / 255.0, seed=seed(2)).numpy()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_grayscale_input_gives_three_equal_channels():
    out = SimCLRAugment(16)(BATCH[..., :1], seed=seed(3)).numpy()
    assert out.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)


def test_single_image_gives_a_single_view():
    out = SimCLRAugment(16)(BATCH[0], seed=seed(4))
    assert out.shape == (16, 16, 3) and out.dtype == tf.float32


def test_same_seed_same_views_different_seed_different_views():
    layer = SimCLRAugment(16)
    a = layer(BATCH, seed=seed(6)).numpy()
    np.testing.assert_array_equal(a, layer(BATCH, seed=seed(6)).numpy())
    np.testing.assert_array_equal(a, SimCLRAugment(16)(BATCH, seed=seed(6)).numpy())
    b = layer(BATCH, seed=seed(7)).numpy()
    assert all(np.abs(a[i] - b[i]).max() > 0.01 for i in range(4))
    # Views of one batch differ from each other (per-image parameters).
    same_input = np.repeat(BATCH[:1], 4, axis=0)
    views = layer(same_input, seed=seed(6)).numpy()
    assert all(np.abs(views[i] - views[j]).max() > 0.01 for i, j in
               itertools.combinations(range(4), 2))


def test_layer_seed_makes_unseeded_calls_reproducible():
    a, b = SimCLRAugment(16, seed=42), SimCLRAugment(16, seed=42)
    first_a, first_b = a(BATCH).numpy(), b(BATCH).numpy()
    np.testing.assert_array_equal(first_a, first_b)
    second_a = a(BATCH).numpy()
    assert np.abs(first_a - second_a).max() > 0.01  # the generator advances
    np.testing.assert_array_equal(second_a, b(BATCH).numpy())


# --------------------------------------------------------------------------------------
# Eager, tf.function, tf.data and strategy.run.


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_same_views_eager_tf_function_and_tf_data(name):
    layer = LAYERS[name]()
    images = np.concatenate([BATCH, BATCH_2])
    eager = [call(layer, images[i:i + 4], seed(30, i)).numpy() for i in (0, 4)]
    if name != "center":
        assert np.abs(eager[0] - call(layer, images[:4], seed(31, 0)).numpy()).max() > 0
    traced = tf.function(lambda x, s: call(layer, x, s))
    for i, expected in zip((0, 4), eager):
        np.testing.assert_allclose(traced(images[i:i + 4], seed(30, i)).numpy(), expected,
                                   atol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4).enumerate().map(
        lambda step, batch: call(layer, batch, tf.stack([tf.constant(30, tf.int64), step * 4])),
        num_parallel_calls=2)
    for got, expected in zip(dataset, eager):
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_unseeded_layer_works_in_tf_data():
    dataset = tf.data.Dataset.from_tensor_slices(np.concatenate([BATCH, BATCH_2])).batch(4).map(
        SimCLRAugment(16, seed=1))
    views = [v.numpy() for v in dataset]
    assert [v.shape for v in views] == [(4, 16, 16, 3)] * 2


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_in_strategy_run_on_two_replicas_with_per_replica_seeds(name):
    layer = LAYERS[name]()
    strategy = tf.distribute.MirroredStrategy(cpu_devices(2))
    assert strategy.num_replicas_in_sync == 2

    images = np.concatenate([BATCH, BATCH_2])

    def shard(context):
        replica = context.replica_id_in_sync_group
        return images[4 * replica:4 * replica + 4], seed(40, replica)

    inputs = strategy.experimental_distribute_values_from_function(shard)

    @tf.function
    def step(inputs):
        return strategy.run(lambda x_s: call(layer, *x_s), args=(inputs,))

    views = strategy.experimental_local_results(step(inputs))
    assert len(views) == 2
    for replica, got in enumerate(views):
        expected = call(layer, images[4 * replica:4 * replica + 4], seed(40, replica))
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-6)
    if name not in ("center",):
        assert np.abs(views[0].numpy() - views[1].numpy()).max() > 0.01


# --------------------------------------------------------------------------------------
# Bad inputs and arguments.


@pytest.mark.parametrize("images,pattern", [
    (np.zeros((24, 24), np.uint8), r"shape=\(24, 24\)"),
    (np.zeros((1, 2, 24, 24, 3), np.uint8), r"shape=\(1, 2, 24, 24, 3\)"),
    (np.zeros((2, 24, 24, 4), np.uint8), r"shape=\(2, 24, 24, 4\)"),
    (np.zeros((2, 24, 24, 2), np.float32), r"shape=\(2, 24, 24, 2\)"),
    (np.zeros((2, 24, 24, 3), np.int32), r"dtype=int32"),
    (np.zeros((2, 24, 24, 3), bool), r"dtype=bool"),
])
@pytest.mark.parametrize("name", ["crop", "color", "simclr", "center"])
def test_bad_images_raise_value_error_naming_them(name, images, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(LAYERS[name](), images, seed(1))


@pytest.mark.parametrize("bad_seed,pattern", [
    (tf.constant([1, 2, 3]), r"shape=\(3,\)"),
    (tf.constant([[1, 2]]), r"shape=\(1, 2\)"),
    (tf.constant([1.0, 2.0]), r"dtype=float32"),
])
def test_bad_seed_raises_value_error_naming_it(bad_seed, pattern):
    with pytest.raises(ValueError, match=pattern):
        SimCLRAugment(16)(BATCH, seed=bad_seed)


@pytest.mark.parametrize("make,pattern", [
    (lambda: ColorDistortion(-0.1), r"strength=-0\.1"),
    (lambda: ColorDistortion(1.5), r"strength=1\.5"),
    (lambda: ColorDistortion(impl="simclrv3"), r"impl='simclrv3'"),
    (lambda: SimCLRAugment(16, color_jitter_strength=2.0), r"strength=2\.0"),
    (lambda: SimCLRAugment(16, color_jitter_impl="v9"), r"impl='v9'"),
    (lambda: SimCLRAugment(0), r"image_size=0"),
    (lambda: SimCLRAugment(16, crop_sampler="torch"), r"sampler='torch'"),
    (lambda: RandomFlip(probability=1.5), r"probability=1\.5"),
    (lambda: RandomGaussianBlur(probability=-0.5), r"probability=-0\.5"),
    (lambda: RandomGaussianBlur(sigma_range=(2.0, 0.1)), r"sigma_range=\(2\.0, 0\.1\)"),
    (lambda: RandomGaussianBlur(kernel_size=0), r"kernel_size=0"),
    (lambda: RandomResizedCrop(16.5), r"size=16\.5"),
    (lambda: CenterCropResize(16, crop_proportion=1.5), r"crop_proportion=1\.5"),
    (lambda: SimCLRAugment(16, seed="x"), r"seed='x'"),
    (lambda: SimCLRAugment(16, vectorized="yes"), r"vectorized='yes'"),
    (lambda: RandomGaussianBlur(vectorized=1), r"vectorized=1"),
])
def test_bad_arguments_raise_value_error_naming_them(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize("kwargs", [
    {},
    {"color_jitter_strength": 0.5, "use_blur": False, "color_jitter_impl": "simclrv1",
     "crop_sampler": "paper", "crop_min_area": 0.4, "vectorized": True, "seed": 7},
])
def test_simclr_augment_round_trips_through_its_config(kwargs):
    assert_round_trips(SimCLRAugment(16, **kwargs), BATCH, seed(54))


def test_plan_thresholds_choose_the_code_paths():
    assert not plan.eval_crops(plan.EVAL_NO_CROP_MAX_SIDE)
    assert plan.eval_crops(plan.EVAL_NO_CROP_MAX_SIDE + 1)
    assert not plan.runs_fused(64, vectorized=False) and plan.runs_fused(65, vectorized=False)
    assert not plan.runs_fused(224, vectorized=True)
    assert plan.runs_batched(tf.zeros([2, 64, 64, 3]))
    assert not plan.runs_batched(tf.zeros([2, 64, 65, 3]))
    assert plan.crops_in_matrix_form(tf.zeros([2, 32, 32, 3]), 32, vectorized=False)
    assert not plan.crops_in_matrix_form(tf.zeros([2, 32, 32, 3]), 33, vectorized=False)
    assert not plan.crops_in_matrix_form(tf.zeros([2, 40, 40, 3]), 16, vectorized=False)
    assert plan.crops_in_matrix_form(tf.zeros([2, 40, 40, 3]), 224, vectorized=True)
