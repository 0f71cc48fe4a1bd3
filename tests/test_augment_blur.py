"""Tests of the Gaussian blur (tf_simclr.augment.blur) against scipy's separable
correlation with zero padding, and of its coins and sigmas.
"""


import numpy as np
import tensorflow as tf

from augment_testutil import (
    BATCH,
    assert_round_trips,
    ks_critical,
    np_blur,
    random_images,
    seed,
    uint8_images,
    uniform_ks,
    within_binomial,
)
from tf_simclr.augment import (
    RandomGaussianBlur,
    SimCLRAugment,
)

# --------------------------------------------------------------------------------------
# Gaussian blur.


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


def test_gaussian_blur_round_trips_through_its_config():
    images = uint8_images((4, 24, 24, 3), rng_seed=15)
    assert_round_trips(RandomGaussianBlur(kernel_size=5, probability=0.7,
                                          sigma_range=(0.5, 1.5), vectorized=True, seed=6),
                       images, seed(53))
