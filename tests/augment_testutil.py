"""Shared helpers of the augmentation tests (tests/test_augment_*.py).

Images are small and shapes are shared between tests, so the XLA programs of the
layers compile only a few times.
"""

import math

import numpy as np
import scipy.ndimage
import scipy.stats
import tensorflow as tf

from tf_simclr.augment import (
    CenterCropResize,
    ColorDistortion,
    RandomFlip,
    RandomGaussianBlur,
    RandomResizedCrop,
    SimCLRAugment,
)


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


def np_blur(image, sigma, radius):
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-x ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    out = scipy.ndimage.correlate1d(image.astype(np.float64), kernel, axis=1, mode="constant")
    out = scipy.ndimage.correlate1d(out, kernel, axis=0, mode="constant")
    return np.clip(out, 0, 1)


# Most tests share this shape (and 4-image halves of it), so that the XLA program
# of SimCLRAugment(16) compiles for few signatures.
BATCH = uint8_images((4, 24, 24, 3), rng_seed=5)
BATCH_2 = uint8_images((4, 24, 24, 3), rng_seed=6)


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


def assert_round_trips(layer, images, s=None):
    """from_config(get_config()) gives an equal config and the same views for seed s."""
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    if s is None:
        expected, got = layer(images), clone(images)
    else:
        expected, got = layer(images, seed=s), clone(images, seed=s)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())
