"""What the augmentation layers share: input and argument checks, dtype
conversion and the seed handling of the random layers (`SeededLayer`).

Images are uint8 or float [B, H, W, C] (or [H, W, C]), C in {1, 3}; the layers
return float32 RGB.
"""

import keras
import tensorflow as tf


def to_float_images(images):
    """uint8 [..., C] scaled by 1/255 (as tf.image.convert_image_dtype), or float → float32."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) * (1.0 / 255.0)
    if images.dtype.is_floating:
        return tf.cast(images, tf.float32)
    raise ValueError(f"Expected uint8 or float images. Received: dtype={images.dtype.name}")


def check_images(images):
    """Validated images as a batch: (tensor [B, H, W, C], True if input was [H, W, C])."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank not in (3, 4):
        raise ValueError("Expected images of shape [batch, height, width, channels] or "
                         f"[height, width, channels]. Received: shape={images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError("Expected 1 or 3 channels (statically known). "
                         f"Received: shape={images.shape}")
    if not (images.dtype == tf.uint8 or images.dtype.is_floating):
        raise ValueError(f"Expected uint8 or float images. Received: dtype={images.dtype.name}")
    if images.dtype.is_floating and images.dtype != tf.float32:
        images = tf.cast(images, tf.float32)
    single = images.shape.rank == 3
    return (images[None] if single else images), single


def to_rgb(images):
    """uint8/float [B, H, W, 1 or 3] -> float32 [B, H, W, 3] (gray tiled)."""
    images = to_float_images(images)
    if images.shape[-1] == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    return images


def check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int. Received: {name}={value!r}")


def check_probability(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected `{name}` in [0, 1]. Received: {name}={value!r}")


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be a bool. Received: {name}={value!r}")


def stage_seed(seed, stage):
    return tf.random.experimental.stateless_fold_in(seed, stage)


def batch_size(image_shape):
    return tf.convert_to_tensor(image_shape, tf.int32)[0]


def per_image(values):
    """values [B] -> [B, 1, 1, 1], to broadcast over images [B, H, W, C]."""
    return tf.reshape(values, [-1, 1, 1, 1])


class SeededLayer(keras.layers.Layer):
    """Seed handling shared by the random layers (see tf_simclr.augment).

    `call(images, training=True, seed=None)`: with training, the subclass's
    `apply_parameters(images, sample_parameters(tf.shape(images), seed))`, seed
    an int tensor [2] or, if None, the next of the layer's SeedGenerator(seed);
    without, `_evaluate(images)`.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        """Nothing to build: the only state is the seed generator made in __init__."""

    def _resolve_seed(self, seed):
        """The call's seed as an int tensor [2], or the generator's next one."""
        if seed is None:
            return self.seed_generator.next()
        seed = tf.convert_to_tensor(seed)
        if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] not in (2, None):
            raise ValueError("Expected `seed` to be an int tensor of shape [2]. "
                             f"Received: dtype={seed.dtype.name}, shape={seed.shape}")
        return seed

    def call(self, images, training=True, seed=None):
        images, single = check_images(images)
        if training:
            seed = self._resolve_seed(seed)
            images = self._augment(images, seed, single)
        else:
            images = self._evaluate(images)
        return images[0] if single else images

    def _augment(self, images, seed, single):
        parameters = self.sample_parameters(tf.shape(images), seed)
        return self.apply_parameters(images, parameters)

    def _evaluate(self, images):
        return to_rgb(images)

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config
