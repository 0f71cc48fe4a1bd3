"""Gaussian blur of the official code (data_util.gaussian_blur: separable, zero
'SAME' padding, 2 * int(kernel_size / 2) + 1 taps), one sigma per image.

`gaussian_kernels` and `gaussian_blur` (one depthwise convolution of a whole batch
[B, H, W, C]); `random_blur` blurs the chosen images and clips to [0, 1], batched
or image by image with only the taps that matter (`blur_one`);
`RandomGaussianBlur` is the Keras layer that draws the coins and sigmas.
"""

import keras
import tensorflow as tf

from tf_simclr.augment import base, plan


def gaussian_kernels(sigmas, radius):
    """Normalised 1-D Gaussian taps at -radius..radius: float32 [B, 2 * radius + 1]."""
    positions = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    sigmas = tf.cast(sigmas, tf.float32)[:, None]
    taps = tf.exp(-tf.pow(positions, 2.0) / (2.0 * tf.pow(sigmas, 2.0)))
    return taps / tf.reduce_sum(taps, axis=1, keepdims=True)


def blur_radius(kernel_size):
    """Official radius int(kernel_size / 2): the blur has 2 * radius + 1 taps."""
    return int(kernel_size / 2)


def gaussian_blur(images, sigmas, radius):
    """Separable Gaussian blur with one sigma per image and zero ('SAME') padding.

    One depthwise convolution per direction (horizontal first, as
    data_util.gaussian_blur) over the batch folded into channels, so each image
    gets its own kernel.

    Args:
      images: float32 [B, H, W, C].
      sigmas: float32 [B].
      radius: python int; the kernel has 2 * radius + 1 taps.
    Returns:
      float32 [B, H, W, C].
    """
    shape = tf.shape(images)
    batch_size, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    taps = tf.repeat(gaussian_kernels(sigmas, radius), channels, axis=0)  # [B * C, K]
    taps = tf.transpose(taps)
    folded = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, height, width, -1])
    kernel_size = 2 * radius + 1
    blurred = tf.nn.depthwise_conv2d(folded, tf.reshape(taps, [1, kernel_size, -1, 1]),
                                     strides=[1, 1, 1, 1], padding="SAME")
    blurred = tf.nn.depthwise_conv2d(blurred, tf.reshape(taps, [kernel_size, 1, -1, 1]),
                                     strides=[1, 1, 1, 1], padding="SAME")
    blurred = tf.reshape(blurred, [height, width, batch_size, channels])
    return tf.transpose(blurred, [2, 0, 1, 3])


# A blur tap is dropped when all taps beyond it weigh less than this (of a kernel
# normalised to 1): the views change by less than float32 rounding of [0, 1].
_BLUR_TAIL = 1e-8


def _effective_radius(taps, radius):
    """Smallest r <= radius whose taps beyond r sum to <= _BLUR_TAIL; taps [2R + 1]."""
    half = taps[radius:]  # distances 0..R
    beyond = 2.0 * (tf.reduce_sum(half) - tf.cumsum(half))  # weight beyond each distance
    return tf.reduce_min(tf.where(beyond <= _BLUR_TAIL, tf.range(radius + 1), radius))


def blur_one(image, taps, radius):
    """One image [H, W, C] blurred with its taps [2R + 1], tails under _BLUR_TAIL
    dropped (sigma 0.1..2 needs 2..23 of the 23 taps at 224 px), clipped to [0, 1]."""
    effective = _effective_radius(taps, radius)
    taps = taps[radius - effective:radius + effective + 1]
    channels = image.shape[-1]
    horizontal = tf.tile(tf.reshape(taps, [1, -1, 1, 1]), [1, 1, channels, 1])
    vertical = tf.tile(tf.reshape(taps, [-1, 1, 1, 1]), [1, 1, channels, 1])
    blurred = tf.nn.depthwise_conv2d(image[None], horizontal, [1, 1, 1, 1], "SAME")
    blurred = tf.nn.depthwise_conv2d(blurred, vertical, [1, 1, 1, 1], "SAME")
    return tf.clip_by_value(blurred[0], 0.0, 1.0)


def random_blur(images, blur, sigmas, radius, vectorized=False):
    """Blur only the images where `blur`, each with its sigma; then clip to [0, 1].

    The official batch_random_blur blurs every image and keeps it where the coin
    says so; blurring only the chosen ones gives the same result for half the work.
    Large images (not plan.runs_batched) are blurred one by one, each dropping
    the kernel's tail taps that weigh less than 1e-8 in all (small sigmas need far
    fewer than 2R + 1 taps); small images in one depthwise convolution of the
    chosen ones.
    `vectorized` blurs every image in one depthwise convolution and keeps the
    chosen ones, as official: static shapes, for XLA.

    Args:
      images: float32 [B, H, W, C].
      blur: bool [B]; sigmas: float32 [B]; radius: python int; vectorized: bool.
    Returns:
      float32 [B, H, W, C] in [0, 1].
    """
    if vectorized:
        blurred = tf.where(base.per_image(blur), gaussian_blur(images, sigmas, radius), images)
        return tf.clip_by_value(blurred, 0.0, 1.0)
    chosen = tf.where(blur)

    def blur_chosen():
        blurred = gaussian_blur(tf.gather_nd(images, chosen), tf.gather_nd(sigmas, chosen),
                                radius)
        return tf.tensor_scatter_nd_update(images, chosen, blurred)

    if not plan.runs_batched(images):  # image by image, each with its own number of taps
        return tf.map_fn(
            lambda args: tf.cond(args[1], lambda: blur_one(args[0], args[2], radius),
                                 lambda: tf.clip_by_value(args[0], 0.0, 1.0)),
            (images, blur, gaussian_kernels(sigmas, radius)),
            fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
            parallel_iterations=plan.PARALLEL_IMAGES)
    # A convolution over zero channels is an error, so a batch without a blurred
    # image (e.g. a single image whose coin says no) skips it.
    images = tf.cond(tf.size(chosen) > 0, blur_chosen, lambda: images)
    return tf.clip_by_value(images, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="tf_simclr")
class RandomGaussianBlur(base.SeededLayer):
    """Gaussian blur of each image with probability 0.5 and its own sigma.

    sigma ~ U(0.1, 2.0) per image (the official code draws one sigma per batch);
    the kernel has 2 * int(kernel_size / 2) + 1 taps with kernel_size = height // 10
    unless given (official: 23 taps at 224, 3 at 32), zero ('SAME') padding as
    official; the result is clipped to [0, 1].

    Args:
      kernel_size: optional int; None takes height // 10 of the input.
      probability: of blurring an image.
      sigma_range: (low, high) of the uniform sigma.
      vectorized: blur every image in one batched convolution and keep the chosen
        ones (static shapes) instead of only the chosen ones, one by one for large
        images (fastest on a CPU).
      seed: optional int for the layer's seed generator.

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}); `seed`
    optional int [2]. Returns float32 [B, H, W, 3] (training=False: unchanged).
    """

    def __init__(self, kernel_size=None, probability=0.5, sigma_range=(0.1, 2.0),
                 vectorized=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if kernel_size is not None:
            base.check_positive_int("kernel_size", kernel_size)
        base.check_probability("probability", probability)
        if len(sigma_range) != 2 or not 0.0 < sigma_range[0] <= sigma_range[1]:
            raise ValueError("Expected `sigma_range` = (low, high) with 0 < low <= high. "
                             f"Received: sigma_range={sigma_range!r}")
        base.check_bool("vectorized", vectorized)
        self.kernel_size = kernel_size
        self.probability = probability
        self.sigma_range = tuple(sigma_range)
        self.vectorized = vectorized

    def sample_parameters(self, image_shape, seed):
        """{"blur": bool [B], "sigma": float32 [B]}."""
        blur, sigma = tf.unstack(
            tf.random.stateless_uniform([2, base.batch_size(image_shape)], seed), axis=0)
        low, high = self.sigma_range
        return {"blur": blur < self.probability, "sigma": low + sigma * (high - low)}

    def radius(self, height):
        """Blur radius for images of static height `height`."""
        kernel_size = self.kernel_size
        if kernel_size is None:
            if height is None:
                raise ValueError("RandomGaussianBlur(kernel_size=None) needs a static image "
                                 "height (kernel_size = height // 10). Received: height=None")
            kernel_size = height // 10
        return blur_radius(kernel_size)

    def apply_parameters(self, images, parameters):
        images = base.to_rgb(images)
        return random_blur(images, parameters["blur"], parameters["sigma"],
                           self.radius(images.shape[1]), self.vectorized)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, probability=self.probability,
                      sigma_range=self.sigma_range, vectorized=self.vectorized)
        return config
