"""Tests of the SimCLR augmentation layers (tf_simclr.augment, tf_simclr.image_ops).

Three kinds of checks:
  * statistics on many samples with a fixed seed, bounds from the known
    distribution (rates within 4 binomial sigmas, Kolmogorov-Smirnov distances
    below the alpha = 1e-4 critical value); the crop sampler is compared with
    tf.image.stateless_sample_distorted_bounding_box itself;
  * each op on fixed parameters against an independent NumPy / colorsys / PIL /
    scipy computation written here;
  * every layer eagerly, under tf.function, in tf.data and in strategy.run on two
    replicas, all giving the same views for the same seed.

Images are small and shapes are shared between tests, so the XLA programs of the
layers compile only a few times.
"""

import colorsys
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import tensorflow as tf
from PIL import Image

from testutil import cpu_devices
from tf_simclr import image_ops, preview_augment
from tf_simclr.augment import (
    CenterCropResize,
    ColorDistortion,
    RandomFlip,
    RandomGaussianBlur,
    RandomResizedCrop,
    SimCLRAugment,
)

GRAY = np.array([0.2989, 0.5870, 0.1140], np.float32)


def seed(a, b=0):
    return tf.constant([a, b], tf.int64)


def within_binomial(count, n, p, sigmas=4.0):
    """|count/n - p| <= sigmas * sqrt(p (1 - p) / n)."""
    rate = count / n
    bound = sigmas * math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) <= bound, f"rate {rate:.4f} vs p={p} (+-{bound:.4f}, n={n})"


def ks_critical(n, m=None, alpha=1e-4):
    """Critical KS distance at level alpha (one sample of n, or two of n and m)."""
    c = math.sqrt(-math.log(alpha / 2) / 2)
    return c * math.sqrt(1 / n + (1 / m if m else 0.0))


def uniform_ks(samples, low, high):
    return scipy.stats.kstest(samples, scipy.stats.uniform(low, high - low).cdf).statistic


def random_images(shape, rng_seed=0):
    return np.random.RandomState(rng_seed).rand(*shape).astype(np.float32)


def uint8_images(shape, rng_seed=0):
    return np.random.RandomState(rng_seed).randint(0, 256, shape).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Random resized crop: the box sampler.


def tf_op_boxes(height, width, n, max_attempts=100, area_range=(0.08, 1.0)):
    """n boxes from the op the official code calls, with the whole image as bbox."""

    @tf.function
    def draw(seeds):
        def one(s):
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                [height, width, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=s,
                min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=area_range, max_attempts=max_attempts,
                use_image_if_no_bounding_boxes=True)
            return tf.stack([begin[0], begin[1], size[0], size[1]])
        return tf.map_fn(one, seeds, fn_output_signature=tf.int32)

    seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(99, tf.int64))],
                     axis=1)
    return draw(seeds).numpy()


def our_boxes(sampler, height, width, n, rng_seed=1, **kwargs):
    sample = {"official": image_ops.sample_distorted_crop_boxes,
              "paper": image_ops.sample_paper_crop_boxes}[sampler]
    return sample(seed(rng_seed), tf.fill([n], height), tf.fill([n], width), **kwargs).numpy()


def box_stats(boxes, height, width):
    area = boxes[:, 2] * boxes[:, 3] / (height * width)
    aspect = boxes[:, 3] / boxes[:, 2]
    return area, aspect


@pytest.mark.parametrize("height,width", [(48, 64), (224, 224)])
def test_official_crop_sampler_matches_tf_sample_distorted_bounding_box(height, width):
    ours = our_boxes("official", height, width, 4000)
    theirs = tf_op_boxes(height, width, 1500)
    ours_area, ours_aspect = box_stats(ours, height, width)
    their_area, their_aspect = box_stats(theirs, height, width)
    critical = ks_critical(len(ours), len(theirs))
    assert scipy.stats.ks_2samp(ours_area, their_area).statistic < critical
    assert scipy.stats.ks_2samp(ours_aspect, their_aspect).statistic < critical
    # Corner: the op draws it uniform in [0, H - h) (never the last offset).
    movable = ours[:, 2] < height
    ours_y = ours[movable, 0] / (height - ours[movable, 2])
    movable_t = theirs[:, 2] < height
    their_y = theirs[movable_t, 0] / (height - theirs[movable_t, 2])
    assert scipy.stats.ks_2samp(ours_y, their_y).statistic < ks_critical(len(ours_y),
                                                                          len(their_y))
    # Hard constraints of the op: in the image, >= 10% of it (min_object_covered),
    # aspect within the range up to the rounding of the width.
    assert np.all(ours[:, :2] >= 0)
    assert np.all(ours[:, 0] + ours[:, 2] <= height)
    assert np.all(ours[:, 1] + ours[:, 3] <= width)
    assert np.all(ours[movable, 0] + ours[movable, 2] < height)
    assert ours_area.min() >= 0.1 - 1e-6
    assert ours_area.max() <= 1.0
    slack = 0.5 / ours[:, 2]
    assert np.all(ours_aspect >= 3 / 4 - slack - 1e-6)
    assert np.all(ours_aspect <= 4 / 3 + slack + 1e-6)


def test_official_crop_sampler_is_not_uniform_in_area():
    """TF's sampler draws the integer height uniformly, not the area: its area
    fractions start at 0.1 (min_object_covered) and are far from U(0.08, 1)."""
    area, aspect = box_stats(our_boxes("official", 224, 224, 4000), 224, 224)
    assert np.mean(area < 0.1) == 0.0
    assert uniform_ks(area, 0.08, 1.0) > 3 * ks_critical(len(area))
    # ...but the aspect ratio is uniform in (3/4, 4/3), as the op draws it.
    assert uniform_ks(aspect, 3 / 4, 4 / 3) < ks_critical(len(aspect)) + 0.01


def paper_sampler_reference(height, width, n, rng):
    """The paper's (torchvision's) RandomResizedCrop sampler, one box at a time."""
    boxes = []
    for _ in range(n):
        for _ in range(100):
            area = height * width * rng.uniform(0.08, 1.0)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = int(round(math.sqrt(area * aspect)))
            h = int(round(math.sqrt(area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                boxes.append((rng.randint(0, height - h + 1), rng.randint(0, width - w + 1), h, w))
                break
        else:
            boxes.append((0, 0, height, width))
    return np.array(boxes)


def test_paper_crop_sampler_area_uniform_and_log_aspect_uniform():
    size = 400
    ours = our_boxes("paper", size, size, 4000)
    area, aspect = box_stats(ours, size, size)
    log_aspect = np.log(aspect)
    # Below half the image every candidate fits, so there the accepted boxes keep
    # the candidate law: area ~ U(0.08, 1), log aspect ~ U(log 3/4, log 4/3).
    small = area < 0.5
    assert uniform_ks(area[small], 0.08, 0.5) < ks_critical(small.sum()) + 0.01
    assert uniform_ks(log_aspect[small], math.log(3 / 4), math.log(4 / 3)) < (
        ks_critical(small.sum()) + 0.02)
    # Over the whole range, the same law as the one-at-a-time reference sampler.
    reference = paper_sampler_reference(size, size, 3000, np.random.RandomState(0))
    ref_area, ref_aspect = box_stats(reference, size, size)
    critical = ks_critical(len(area), len(ref_area))
    assert scipy.stats.ks_2samp(area, ref_area).statistic < critical
    assert scipy.stats.ks_2samp(aspect, ref_aspect).statistic < critical
    assert np.all(ours[:, 0] + ours[:, 2] <= size) and np.all(ours[:, 1] + ours[:, 3] <= size)


@pytest.mark.parametrize("sampler", ["official", "paper"])
def test_crop_falls_back_to_the_whole_image_when_no_attempt_fits(sampler):
    # 4 x 200: a crop with aspect in (3/4, 4/3) is at most 4 x 5 px, far below
    # 8% (or 10%) of the 800 px, so every one of the 100 attempts fails.
    boxes = our_boxes(sampler, 4, 200, 50)
    np.testing.assert_array_equal(boxes, np.tile([0, 0, 4, 200], (50, 1)))
    if sampler == "official":
        np.testing.assert_array_equal(tf_op_boxes(4, 200, 20), np.tile([0, 0, 4, 200], (20, 1)))
    layer = RandomResizedCrop(8, sampler=sampler)
    np.testing.assert_array_equal(
        layer.sample_parameters([3, 4, 200, 3], seed(5))["boxes"].numpy(),
        np.tile([0, 0, 4, 200], (3, 1)))


def test_official_crop_fallback_rate_with_one_attempt_matches_tf_op():
    """With max_attempts=1 a candidate is rejected now and then; the fallback
    (whole image) rate must be the op's."""
    # A tall image: candidates with aspect near 4/3 cannot reach 30% of it.
    height, width = 40, 12
    ours = our_boxes("official", height, width, 6000, max_attempts=1, area_range=(0.3, 1.0))
    theirs = tf_op_boxes(height, width, 2000, max_attempts=1, area_range=(0.3, 1.0))
    whole = np.array([0, 0, height, width])
    ours_rate = np.mean(np.all(ours == whole, axis=1))
    their_rate = np.mean(np.all(theirs == whole, axis=1))
    assert 0.05 < their_rate < 0.95  # the comparison means something
    pooled = (ours_rate * 6000 + their_rate * 2000) / 8000
    sigma = math.sqrt(pooled * (1 - pooled) * (1 / 6000 + 1 / 2000))
    assert abs(ours_rate - their_rate) <= 4 * sigma


# --------------------------------------------------------------------------------------
# Random resized crop: the resize, and the flip.

FIXED_BOXES = np.array([[0, 0, 20, 24],   # whole image (downscale)
                        [3, 5, 7, 9],     # small, upscale
                        [19, 23, 1, 1],   # one pixel in the corner
                        [2, 0, 18, 11]], np.int32)


def test_crop_resize_equals_tf_image_resize_of_each_explicit_crop():
    images = random_images((4, 20, 24, 3))
    layer = RandomResizedCrop(16)
    out = layer.apply_parameters(images, {"boxes": tf.constant(FIXED_BOXES)}).numpy()
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32
    for image, box, view in zip(images, FIXED_BOXES, out):
        y, x, h, w = box
        expected = tf.image.resize(image[None, y:y + h, x:x + w], [16, 16], "bicubic")[0]
        np.testing.assert_allclose(view, expected.numpy(), atol=2e-5)


def test_crop_resize_upscale_equals_pil_bicubic():
    """PIL's bicubic (a = -0.5, half-pixel centers) equals TF's when upscaling."""
    images = random_images((4, 20, 24, 3), rng_seed=3)
    out = RandomResizedCrop(16).apply_parameters(images, {"boxes": tf.constant(FIXED_BOXES)})
    y, x, h, w = FIXED_BOXES[1]
    for channel in range(3):
        crop = Image.fromarray(images[1, y:y + h, x:x + w, channel], mode="F")
        expected = np.asarray(crop.resize((16, 16), Image.BICUBIC))
        np.testing.assert_allclose(out[1, :, :, channel].numpy(), expected, atol=1e-4)


def test_crop_resize_with_folded_flip_mirrors_the_view():
    images = tf.constant(random_images((4, 20, 24, 3)))
    boxes = tf.constant(FIXED_BOXES)
    flip = tf.constant([True, False, True, True])
    plain = image_ops.crop_and_resize(images, boxes, 16).numpy()
    flipped = image_ops.crop_and_resize(images, boxes, 16, flip).numpy()
    for i in range(4):
        expected = plain[i, :, ::-1] if flip[i] else plain[i]
        np.testing.assert_allclose(flipped[i], expected, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_vectorized_crop_resize_equals_tf_image_resize_of_each_explicit_crop(dtype):
    """The matrix form reproduces ResizeBicubic's weights (table, borders, flip)."""
    images = uint8_images((4, 20, 24, 3), rng_seed=8)
    if dtype == "float32":
        images = images / np.float32(255.0)
    boxes = tf.constant(FIXED_BOXES)
    flip = tf.constant([False, True, False, True])
    eager = image_ops.crop_and_resize_vectorized(images, boxes, 16, flip).numpy()
    compiled = tf.function(image_ops.crop_and_resize_vectorized, jit_compile=True)(
        images, boxes, 16, flip).numpy()  # XLA: every shape static
    assert eager.shape == (4, 16, 16, 3) and eager.dtype == np.float32
    floats = images.astype(np.float32) / (255.0 if dtype == "uint8" else 1.0)
    for i, (y, x, h, w) in enumerate(FIXED_BOXES):
        expected = tf.image.resize(floats[i, y:y + h, x:x + w][None], [16, 16], "bicubic")[0]
        expected = expected.numpy()[:, ::-1] if flip[i] else expected.numpy()
        np.testing.assert_allclose(eager[i], expected, atol=2e-6)
        np.testing.assert_allclose(compiled[i], expected, atol=2e-6)


def test_vectorized_crop_resize_on_sampled_boxes_downscale_and_upscale():
    images = random_images((64, 40, 40, 3), rng_seed=9)
    boxes = image_ops.sample_distorted_crop_boxes(seed(10), tf.fill([64], 40), tf.fill([64], 40))
    for size in (24, 56):  # crops of 12..40 px: both directions
        np.testing.assert_allclose(
            image_ops.crop_and_resize_vectorized(images, boxes, size).numpy(),
            image_ops.crop_and_resize(images, boxes, size).numpy(), atol=3e-6)


def test_flip_rate_and_effect():
    layer = RandomFlip()
    flips = layer.sample_parameters([8000, 4, 4, 3], seed(3))["flip"].numpy()
    within_binomial(flips.sum(), flips.size, 0.5)
    images = random_images((6, 5, 7, 3))
    flip = np.array([True, False, True, False, False, True])
    out = layer.apply_parameters(images, {"flip": tf.constant(flip)}).numpy()
    for i in range(6):
        np.testing.assert_array_equal(out[i], images[i, :, ::-1] if flip[i] else images[i])


# --------------------------------------------------------------------------------------
# Color distortion.


def np_brightness(x, f):
    return np.clip(x * f, 0, 1)


def np_contrast(x, f):
    mean = x.mean(axis=(0, 1), keepdims=True)  # tf.image.adjust_contrast: per channel
    return np.clip((x - mean) * f + mean, 0, 1)


def np_hsv_map(x, fn):
    out = np.empty_like(x)
    for i, j in itertools.product(range(x.shape[0]), range(x.shape[1])):
        h, s, v = colorsys.rgb_to_hsv(*x[i, j].astype(np.float64))
        out[i, j] = colorsys.hsv_to_rgb(*fn(h, s, v))
    return np.clip(out, 0, 1)


def np_saturation(x, f):
    return np_hsv_map(x, lambda h, s, v: (h, min(max(s * f, 0.0), 1.0), v))


def np_hue(x, delta):
    return np_hsv_map(x, lambda h, s, v: ((h + delta) % 1.0, s, v))


def np_gray(x):
    return np.repeat((x @ GRAY)[..., None], 3, axis=-1)


NP_OPS = {0: np_brightness, 1: np_contrast, 2: np_saturation, 3: np_hue}
COLOR_SHAPE = (4, 6, 6, 3)


def color_parameters(op_order, brightness=1.0, contrast=1.0, saturation=1.0, hue=0.0,
                     jitter=True, grayscale=False):
    n = len(op_order)

    def per_image(value, dtype=tf.float32):
        return tf.constant(np.broadcast_to(value, (n,)), dtype)

    return {"jitter": per_image(jitter, tf.bool), "grayscale": per_image(grayscale, tf.bool),
            "op_order": tf.constant(op_order, tf.int32), "brightness": per_image(brightness),
            "contrast": per_image(contrast), "saturation": per_image(saturation),
            "hue": per_image(hue)}


IDENTITY_ORDER = [[0, 1, 2, 3]] * COLOR_SHAPE[0]


@pytest.mark.parametrize("op,values", [
    (0, [0.3, 0.9, 1.4, 1.8]),        # brightness factor (v2)
    (1, [0.2, 0.7, 1.3, 1.8]),        # contrast factor
    (2, [0.0, 0.4, 1.5, 1.8]),        # saturation factor
    (3, [-0.2, -0.05, 0.1, 0.5]),     # hue delta in turns
])
def test_each_color_op_matches_numpy_on_fixed_parameters(op, values):
    images = random_images(COLOR_SHAPE, rng_seed=op)
    images[0, 0, 0] = [0.0, 0.0, 0.0]  # black and gray pixels: hue/saturation edge cases
    images[1, 0, 0] = [0.5, 0.5, 0.5]
    name = ["brightness", "contrast", "saturation", "hue"][op]
    parameters = color_parameters(IDENTITY_ORDER, **{name: np.array(values, np.float32)})
    out = ColorDistortion().apply_parameters(images, parameters).numpy()
    for image, value, view in zip(images, values, out):
        np.testing.assert_allclose(view, NP_OPS[op](image, value), atol=2e-5)


def test_additive_brightness_v1_matches_numpy():
    images = random_images(COLOR_SHAPE, rng_seed=7)
    deltas = np.array([-0.8, -0.1, 0.3, 0.8], np.float32)
    parameters = color_parameters(IDENTITY_ORDER, brightness=deltas)
    out = ColorDistortion(impl="simclrv1").apply_parameters(images, parameters).numpy()
    for image, delta, view in zip(images, deltas, out):
        np.testing.assert_allclose(view, np.clip(image + delta, 0, 1), atol=2e-5)


def test_grayscale_and_jitter_coins_match_numpy():
    images = random_images(COLOR_SHAPE, rng_seed=8)
    parameters = color_parameters(IDENTITY_ORDER, brightness=1.5,
                                  jitter=np.array([True, False, True, False]),
                                  grayscale=np.array([False, False, True, True]))
    out = ColorDistortion().apply_parameters(images, parameters).numpy()
    np.testing.assert_allclose(out[0], np_brightness(images[0], 1.5), atol=2e-5)
    np.testing.assert_allclose(out[1], images[1], atol=2e-6)  # neither coin: untouched
    np.testing.assert_allclose(out[2], np_gray(np_brightness(images[2], 1.5)), atol=2e-5)
    np.testing.assert_allclose(out[3], np_gray(images[3]), atol=2e-5)


def test_color_ops_run_in_each_images_own_order_with_a_clip_after_each():
    images = random_images(COLOR_SHAPE, rng_seed=9)
    orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]]
    values = {0: 1.6, 1: 1.7, 2: 1.5, 3: 0.15}
    parameters = color_parameters(orders, brightness=values[0], contrast=values[1],
                                  saturation=values[2], hue=values[3])
    out = ColorDistortion().apply_parameters(images, parameters).numpy()
    for image, order, view in zip(images, orders, out):
        expected = image
        for op in order:
            expected = NP_OPS[op](expected, values[op])
        np.testing.assert_allclose(view, expected, atol=5e-5)
    # The order matters (so the test above can tell orders apart).
    swapped = images[0]
    for op in orders[1]:
        swapped = NP_OPS[op](swapped, values[op])
    assert np.abs(swapped - out[0]).max() > 0.05


@pytest.mark.parametrize("impl", ["simclrv2", "simclrv1"])
def test_large_images_take_the_per_image_color_path_with_the_same_semantics(impl):
    """Above 64 x 64 pixels color runs image by image (one XLA program per image)."""
    side = 72
    assert side * side > image_ops._SMALL_IMAGE_PIXELS
    images = random_images((4, side, side, 3), rng_seed=10)
    images[0, 0, 0] = [0.0, 0.0, 0.0]
    images[1, 0, 0] = [0.5, 0.5, 0.5]
    orders = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]]
    brightness = 1.4 if impl == "simclrv2" else 0.2
    values = {0: brightness, 1: 0.6, 2: 1.7, 3: -0.3}
    jitter = np.array([True, True, True, False])
    grayscale = np.array([False, True, False, True])
    parameters = color_parameters(orders, brightness=values[0], contrast=values[1],
                                  saturation=values[2], hue=values[3], jitter=jitter,
                                  grayscale=grayscale)
    out = ColorDistortion(impl=impl).apply_parameters(images, parameters).numpy()
    ops = dict(NP_OPS)
    if impl == "simclrv1":
        ops[0] = lambda x, delta: np.clip(x + delta, 0, 1)
    for i in range(4):
        expected = images[i]
        if jitter[i]:
            for op in orders[i]:
                expected = ops[op](expected, values[op])
        if grayscale[i]:
            expected = np_gray(expected)
        np.testing.assert_allclose(out[i], expected, atol=5e-5)


@pytest.mark.parametrize("strength,impl", [(1.0, "simclrv2"), (0.5, "simclrv2"),
                                           (1.0, "simclrv1")])
def test_color_parameter_distributions(strength, impl):
    n = 6000
    p = ColorDistortion(strength, impl=impl).sample_parameters([n, 4, 4, 3], seed(11))
    p = {k: v.numpy() for k, v in p.items()}
    within_binomial(p["jitter"].sum(), n, 0.8)
    within_binomial(p["grayscale"].sum(), n, 0.2)
    within_binomial((p["jitter"] & p["grayscale"]).sum(), n, 0.16)  # independent coins
    s = strength
    brightness = ((max(0.0, 1 - 0.8 * s), 1 + 0.8 * s) if impl == "simclrv2"
                  else (-0.8 * s, 0.8 * s))
    for name, (low, high) in [("brightness", brightness), ("contrast", (1 - 0.8 * s, 1 + 0.8 * s)),
                              ("saturation", (1 - 0.8 * s, 1 + 0.8 * s)),
                              ("hue", (-0.2 * s, 0.2 * s))]:
        assert p[name].min() >= low - 1e-6 and p[name].max() <= high + 1e-6, name
        assert uniform_ks(p[name], low, high) < ks_critical(n), name


def test_color_op_order_is_a_uniform_random_permutation_per_image():
    n = 4800
    orders = ColorDistortion().sample_parameters([n, 4, 4, 3], seed(12))["op_order"].numpy()
    assert np.all(np.sort(orders, axis=1) == np.arange(4))
    counts = {}
    for row in map(tuple, orders):
        counts[row] = counts.get(row, 0) + 1
    assert len(counts) == 24
    chi2 = scipy.stats.chisquare(list(counts.values()))
    assert chi2.pvalue > 1e-4
    for position in range(4):  # each op first/second/... a quarter of the time
        for op in range(4):
            within_binomial(np.sum(orders[:, position] == op), n, 0.25)


def test_color_strength_zero_is_off():
    images = random_images(COLOR_SHAPE)
    layer = ColorDistortion(0.0)
    np.testing.assert_array_equal(layer(images, seed=seed(1)).numpy(), images)
    assert "color" not in SimCLRAugment(16, color_jitter_strength=0.0).sample_parameters(
        [2, 24, 24, 3], seed(1))


# --------------------------------------------------------------------------------------
# Gaussian blur.


def np_blur(image, sigma, radius):
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-x ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    out = scipy.ndimage.correlate1d(image.astype(np.float64), kernel, axis=1, mode="constant")
    out = scipy.ndimage.correlate1d(out, kernel, axis=0, mode="constant")
    return np.clip(out, 0, 1)


def test_blur_matches_scipy_separable_gaussian_with_zero_padding():
    images = random_images((4, 20, 20, 3), rng_seed=4)
    sigmas = np.array([0.1, 0.7, 1.3, 2.0], np.float32)
    blur = np.array([True, True, False, True])
    layer = RandomGaussianBlur()  # kernel_size = 20 // 10 = 2 -> radius 1, 3 taps
    assert layer.radius(20) == 1
    wide = RandomGaussianBlur(kernel_size=9)  # radius 4, 9 taps
    for radius, lay in [(1, layer), (4, wide)]:
        out = lay.apply_parameters(images, {"blur": tf.constant(blur),
                                            "sigma": tf.constant(sigmas)}).numpy()
        for i in range(4):
            expected = np_blur(images[i], sigmas[i], radius) if blur[i] else images[i]
            np.testing.assert_allclose(out[i], expected, atol=2e-6)


def test_blur_of_large_images_drops_only_negligible_tail_taps():
    """Above 64 x 64 each image is blurred alone with the taps that matter (per sigma)."""
    images = random_images((4, 72, 72, 3), rng_seed=5)
    sigmas = np.array([0.1, 0.9, 1.6, 2.0], np.float32)
    blur = np.array([True, True, False, True])
    layer = RandomGaussianBlur(kernel_size=23)  # radius 11, as at 224 px
    out = layer.apply_parameters(images, {"blur": tf.constant(blur),
                                          "sigma": tf.constant(sigmas)}).numpy()
    for i in range(4):
        expected = np_blur(images[i], sigmas[i], 11) if blur[i] else images[i]
        np.testing.assert_allclose(out[i], expected, atol=2e-6)


def test_blur_kernel_size_is_a_tenth_of_the_side_odd():
    assert SimCLRAugment(224).blur.radius(224) == 11  # 23 x 23, as official
    assert SimCLRAugment(32).blur.radius(32) == 1     # 3 x 3
    assert RandomGaussianBlur().radius(96) == 4       # kernel_size 9 -> 9 taps
    assert RandomGaussianBlur().radius(100) == 5      # kernel_size 10 -> 11 taps


def test_blur_of_a_batch_where_no_image_is_chosen_is_the_identity():
    images = random_images((2, 20, 20, 3))
    out = RandomGaussianBlur().apply_parameters(
        images, {"blur": tf.constant([False, False]), "sigma": tf.constant([1.0, 1.0])})
    np.testing.assert_array_equal(out.numpy(), images)
    # A single image: its coin says "no blur" about half the time.
    layer = RandomGaussianBlur()
    for s in range(6):
        assert layer(images[0], seed=seed(s)).shape == (20, 20, 3)


def test_blur_rate_and_sigma_range():
    n = 8000
    p = RandomGaussianBlur().sample_parameters([n, 4, 4, 3], seed(13))
    blur, sigma = p["blur"].numpy(), p["sigma"].numpy()
    within_binomial(blur.sum(), n, 0.5)
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert uniform_ks(sigma, 0.1, 2.0) < ks_critical(n)
    assert len(np.unique(sigma)) > n // 2  # one sigma per image, not per batch


def test_use_blur_false_switches_blur_off():
    images = BATCH
    on = SimCLRAugment(16, seed=0)
    off = SimCLRAugment(16, use_blur=False, seed=0)
    parameters = on.sample_parameters([4, 24, 24, 3], seed(3))
    assert "blur" not in off.sample_parameters([4, 24, 24, 3], seed(3))
    parameters["blur"]["blur"] = tf.constant([False] * 4)
    without = {k: v for k, v in parameters.items() if k != "blur"}
    np.testing.assert_allclose(on.apply_parameters(images, parameters).numpy(),
                               off.apply_parameters(images, without).numpy(), atol=1e-6)


# --------------------------------------------------------------------------------------
# Eval preprocessing.


def np_center_box(height, width, proportion=0.875):
    """data_util._compute_crop_shape + center_crop offsets for a square output."""
    if 1.0 > width / height:
        crop_h = crop_w = int(np.rint(proportion * width))
    else:
        crop_h = crop_w = int(np.rint(proportion * height))
    return ((height - crop_h) + 1) // 2, ((width - crop_w) + 1) // 2, crop_h, crop_w


@pytest.mark.parametrize("height,width", [(40, 30), (30, 40), (48, 48)])
def test_center_crop_0875_then_bicubic_resize(height, width):
    images = random_images((2, height, width, 3), rng_seed=height)
    y, x, h, w = np_center_box(height, width)
    assert (h, w) == ((26, 26) if min(height, width) == 30 else (42, 42))
    out = CenterCropResize(36)(images).numpy()
    expected = np.clip(tf.image.resize(images[:, y:y + h, x:x + w], [36, 36], "bicubic"), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(SimCLRAugment(36)(images, training=False).numpy(), expected,
                               atol=1e-6)


def test_no_crop_or_resize_at_32_px_and_below():
    images = uint8_images((3, 32, 32, 3))
    np.testing.assert_allclose(CenterCropResize(32)(images).numpy(), images / 255.0, atol=1e-7)
    np.testing.assert_allclose(SimCLRAugment(32)(images, training=False).numpy(),
                               images / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match=r"\(3, 40, 40, 3\)"):
        CenterCropResize(32)(uint8_images((3, 40, 40, 3)))


# --------------------------------------------------------------------------------------
# The whole augmentation: outputs, inputs, seeds.

# Most tests share this shape (and 4-image halves of it), so that the XLA program
# of SimCLRAugment(16) compiles for few signatures.
BATCH = uint8_images((4, 24, 24, 3), rng_seed=5)
BATCH_2 = uint8_images((4, 24, 24, 3), rng_seed=6)


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
    assert side * side > image_ops._SMALL_IMAGE_PIXELS
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
    assert bool(loops) == (side * side > image_ops._SMALL_CROP_PIXELS), loops
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

LAYERS = {
    "crop": lambda: RandomResizedCrop(16),
    "flip": lambda: RandomFlip(),
    "color": lambda: ColorDistortion(),
    "blur": lambda: RandomGaussianBlur(kernel_size=5),
    "center": lambda: CenterCropResize(36),
    "simclr": lambda: SimCLRAugment(16),
    "simclr_vectorized": lambda: SimCLRAugment(16, vectorized=True),
}


def call(layer, images, s):
    if isinstance(layer, CenterCropResize):
        return layer(images)
    return layer(images, seed=s)


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


# --------------------------------------------------------------------------------------
# The preview tool.


@pytest.fixture
def source_png(tmp_path):
    path = tmp_path / "source.png"
    Image.fromarray(uint8_images((40, 50, 3), rng_seed=8)).save(path)
    return path


def test_preview_writes_a_grid_of_distinct_views(source_png, tmp_path):
    out = tmp_path / "grid.png"
    preview_augment.FLAGS(["preview", f"--image={source_png}", f"--out={out}",
                           "--image_size=16", "--rows=2", "--cols=3", "--seed=3",
                           "--padding=2"])
    try:
        preview_augment.main(["preview"])
    finally:
        preview_augment.FLAGS.unparse_flags()
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 16 + 2, 3 * 16 + 2 * 2, 3)
    tiles = [grid[r * 18:r * 18 + 16, c * 18:c * 18 + 16].astype(int)
             for r in range(2) for c in range(3)]
    assert all(np.abs(a - b).max() > 10 for a, b in itertools.combinations(tiles, 2))
    assert np.all(grid[16:18] == 255)  # the padding between rows


@pytest.mark.parametrize("content", [None, b"this is not an image"])
def test_preview_missing_or_unreadable_image_exits_nonzero(tmp_path, content):
    image = tmp_path / "bad.png"
    if content is not None:
        image.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "tf_simclr.preview_augment", f"--image={image}",
         f"--out={tmp_path / 'grid.png'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error:" in result.stderr and str(image) in result.stderr
    assert not (tmp_path / "grid.png").exists()
