"""Tests of the colour distortion (tf_simclr.augment.color): each op on fixed
parameters against NumPy / colorsys, and the parameter distributions (rates within
4 binomial sigmas, KS distances below the alpha = 1e-4 critical value).
"""

import colorsys
import itertools

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from augment_testutil import (
    assert_round_trips,
    ks_critical,
    random_images,
    seed,
    uint8_images,
    uniform_ks,
    within_binomial,
)
from tf_simclr.augment import (
    ColorDistortion,
    SimCLRAugment,
    plan,
)

GRAY = np.array([0.2989, 0.5870, 0.1140], np.float32)


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
    assert side * side > plan.BATCHED_PIXELS_MAX
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


def test_color_distortion_round_trips_through_its_config():
    images = uint8_images((4, 24, 24, 3), rng_seed=14)
    assert_round_trips(ColorDistortion(0.5, impl="simclrv1", vectorized=True, seed=5), images,
                       seed(52))
