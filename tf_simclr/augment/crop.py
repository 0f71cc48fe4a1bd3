"""Random resized crop, flip and the eval center crop.

Ops: `crop_and_resize` (each image's own box, TF's native bicubic kernel per
image, or the matrix form) and `crop_and_resize_vectorized` (two batched matrix
products, static shapes, for XLA), `resize_crop` (one box shared by a batch). Both
equal tf.image.resize(crop, [S, S], "bicubic") of each explicit crop (half-pixel
centers, no antialias). Layers: RandomResizedCrop, RandomFlip, CenterCropResize.

Images are [B, H, W, C]; boxes int32 [B, 4] (offset_y, offset_x, height, width),
from crop_boxes.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_simclr.augment import base, plan
from tf_simclr.augment.crop_boxes import (
    center_crop_boxes,
    sample_distorted_crop_boxes,
    sample_paper_crop_boxes,
)
from tf_simclr.config import CROP_SAMPLERS, DEFAULT_CROP_MIN_AREA

EVAL_CROP_PROPORTION = 0.875


def crop_resize_one(image, box, size):
    """One image [H, W, C] (uint8 or float32) cropped to box [4] and resized with
    TF's native ResizeBicubic (half-pixel centers): float32 [S, S, C], unscaled."""
    offset_y, offset_x, height, width = tf.unstack(box)
    crop = image[None, offset_y:offset_y + height, offset_x:offset_x + width]
    return tf.raw_ops.ResizeBicubic(images=crop, size=[size, size], half_pixel_centers=True)[0]


def resize_crop(images, box, size):
    """tf.image.resize (bicubic) of one box [4] shared by images [B, H, W, C] (uint8
    scaled by 1/255 first, as tf.image.convert_image_dtype): float32 [B, S, S, C]."""
    offset_y, offset_x, height, width = tf.unstack(box)
    crop = base.to_float_images(images[:, offset_y:offset_y + height, offset_x:offset_x + width])
    return tf.image.resize(crop, [size, size], method="bicubic")


def crop_and_resize(images, boxes, size, flip=None, vectorized=False):
    """Bicubic resize of one crop box per image to size x size, optionally mirrored.

    Each image is tf.image.resize(crop, [size, size], "bicubic") of its explicit
    crop (TF's native ResizeBicubic kernel, half-pixel centers, no antialias), one
    image at a time in a tf.map_fn: the crops have different sizes, and the native
    kernel on one image (in cache) beats the batched formulations on a CPU
    (bench/bench_augment.py). Works for any input size, with no compilation.
    `vectorized`, or small inputs and outputs (plan.crops_in_matrix_form), take
    the batched matrix form (crop_and_resize_vectorized, the same views to 2e-6).

    Args:
      images: [B, H, W, C] float32, or uint8 (then scaled by 1/255 after the
        resize, which is linear, so it equals resizing the scaled crop).
      boxes: int32 [B, 4] (offset_y, offset_x, height, width).
      size: output side S.
      flip: optional bool [B]; True mirrors that view left-right.
      vectorized: True takes the matrix form at any size.
    Returns:
      float32 [B, S, S, C].
    """
    images = tf.convert_to_tensor(images)
    if plan.crops_in_matrix_form(images, size, vectorized):
        return crop_and_resize_vectorized(images, boxes, size, flip)
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else None
    if images.dtype not in (tf.uint8, tf.float32):
        images = tf.cast(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.int32)
    if flip is None:
        flip = tf.zeros(tf.shape(boxes)[:1], tf.bool)

    def resize_one(args):
        image, box, mirror = args
        view = crop_resize_one(image, box, size)
        if scale is not None:
            view *= scale
        return tf.cond(mirror, lambda: tf.reverse(view, [1]), lambda: view)

    return tf.map_fn(resize_one, (images, boxes, flip),
                     fn_output_signature=tf.TensorSpec([size, size, images.shape[-1]],
                                                       tf.float32),
                     parallel_iterations=plan.PARALLEL_IMAGES)


# from a table at 1024 sub-pixel offsets, computed in double and stored as float32:
# rows are offsets i / 1024, columns the weight at distance i / 1024 and 1 + i / 1024.
_BICUBIC_TABLE_SIZE = 1024


def _keys_cubic_table(a=-0.5):
    near = np.arange(_BICUBIC_TABLE_SIZE + 1, dtype=np.float64) / _BICUBIC_TABLE_SIZE
    far = near + 1.0
    return np.stack([((a + 2) * near - (a + 3)) * near * near + 1,
                     ((a * far - 5 * a) * far + 8 * a) * far - 4 * a], axis=1).astype(np.float32)


_KEYS_CUBIC_TABLE = _keys_cubic_table()


def _bicubic_taps(starts, lengths, size):
    """ResizeBicubic's taps along one axis of each crop: source indices and weights.

    Output position s samples the crop at (s + 0.5) * length / size - 0.5 from its
    4 neighbours; neighbours outside the crop get weight 0 and the others are
    renormalised to sum to 1 (the op's half-pixel-centers behaviour).

    Args:
      starts, lengths: int32 [B], the crop's first index and length on this axis.
      size: output length S.
    Returns:
      (int32 [B, S, 4] indices into the whole axis, float32 [B, S, 4] weights).
    """
    scale = tf.cast(lengths, tf.float32)[:, None] / float(size)
    position = (tf.range(size, dtype=tf.float32)[None, :] + 0.5) * scale - 0.5
    base = tf.floor(position)
    offset = tf.cast(tf.round((position - base) * _BICUBIC_TABLE_SIZE), tf.int32)  # lrintf
    table = tf.constant(_KEYS_CUBIC_TABLE)
    mirrored = _BICUBIC_TABLE_SIZE - offset
    weights = tf.stack([tf.gather(table[:, 1], offset), tf.gather(table[:, 0], offset),
                        tf.gather(table[:, 0], mirrored), tf.gather(table[:, 1], mirrored)],
                       axis=-1)
    taps = tf.cast(base, tf.int32)[..., None] + tf.range(-1, 3)
    inside = (taps >= 0) & (taps < lengths[:, None, None])
    weights = tf.where(inside, weights, 0.0)
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    weights = tf.where(tf.abs(total) >= 1000.0 * np.finfo(np.float32).tiny,
                       weights * (1.0 / total), weights)
    indices = starts[:, None, None] + tf.clip_by_value(taps, 0, lengths[:, None, None] - 1)
    return indices, weights


def _interpolation_matrices(starts, lengths, size, axis_length):
    """float32 [B, S, axis_length]: row s holds output s's bicubic weights."""
    indices, weights = _bicubic_taps(starts, lengths, size)
    return tf.reduce_sum(tf.one_hot(indices, axis_length, dtype=tf.float32)
                         * weights[..., None], axis=2)


def crop_and_resize_vectorized(images, boxes, size, flip=None):
    """crop_and_resize as two batched matrix products, with static shapes.

    Each view is R_b @ image_b @ C_b^T (per channel), where R_b [S, H] and C_b [S, W]
    hold the ResizeBicubic weights of image b's crop box (zero outside it); a flip
    reverses the rows of C_b. No per-image loop and no data-dependent shape, so it
    compiles with XLA (TPU) and runs as a few large kernels on a GPU; on a CPU the
    per-image crop_and_resize does far fewer operations.

    Args, returns: as crop_and_resize.
    """
    images = tf.convert_to_tensor(images)
    uint8 = images.dtype == tf.uint8
    images = tf.cast(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.int32)
    offset_y, offset_x, height, width = tf.unstack(boxes, axis=1)
    rows = _interpolation_matrices(offset_y, height, size, tf.shape(images)[1])
    columns = _interpolation_matrices(offset_x, width, size, tf.shape(images)[2])
    if uint8:
        rows *= 1.0 / 255.0
    if flip is not None:
        columns = tf.where(tf.convert_to_tensor(flip, tf.bool)[:, None, None],
                           tf.reverse(columns, [1]), columns)
    resized = tf.einsum("bsh,bhwc->bswc", rows, images)
    return tf.einsum("btw,bswc->bstc", columns, resized)


def crop_to_rgb(images, boxes, size, flip=None, vectorized=False):
    """crop_and_resize, then gray tiled to RGB: float32 [B, S, S, 3]."""
    return base.to_rgb(crop_and_resize(images, boxes, size, flip, vectorized))


@keras.saving.register_keras_serializable(package="tf_simclr")
class RandomResizedCrop(base.SeededLayer):
    """Random crop of each image, resized bicubic to size x size.

    The crop boxes come from the official sampler (tf.image.sample_distorted_
    bounding_box with min_object_covered 0.1, aspect 3/4..4/3, area min_area..1,
    100 attempts, else the whole image) or from the paper's (area uniform in
    min_area..1, log-aspect uniform, 100 attempts, else the whole image); see
    crop_boxes.sample_distorted_crop_boxes / sample_paper_crop_boxes. Each crop
    is resized as tf.image.resize(crop, [size, size], "bicubic"). With
    training=False the layer does the eval CenterCropResize.

    Args:
      size: output side S.
      sampler: "official" or "paper".
      min_area: the smallest crop as a fraction of the image (official and paper:
        0.08; the official sampler's coverage rule makes it at least 0.1).
      vectorized: resize the whole batch with static shapes
        (crop_and_resize_vectorized: XLA / TPU / GPU) instead of each
        crop with TF's native kernel (fastest on a CPU).
      seed: optional int for the layer's seed generator.

    Call: images uint8 or float [B, H, W, C] or [H, W, C], C in {1, 3};
    `seed` optional int [2]. Returns float32 [B, S, S, 3] (or [S, S, 3]).
    """

    def __init__(self, size, sampler="official", min_area=DEFAULT_CROP_MIN_AREA,
                 vectorized=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        base.check_positive_int("size", size)
        if not 0.0 < min_area <= 1.0:
            raise ValueError(f"Expected `min_area` in (0, 1]. Received: min_area={min_area!r}")
        if sampler not in CROP_SAMPLERS:
            raise ValueError(
                f"Expected `sampler` in {CROP_SAMPLERS}. Received: sampler={sampler!r}")
        base.check_bool("vectorized", vectorized)
        self.size = size
        self.sampler = sampler
        self.min_area = min_area
        self.vectorized = vectorized
        self._center_crop = CenterCropResize(size)

    def sample_parameters(self, image_shape, seed):
        """{"boxes": int32 [B, 4] (offset_y, offset_x, height, width)} for images of
        shape `image_shape` [B, H, W, C] (all of one size)."""
        image_shape = tf.convert_to_tensor(image_shape, tf.int32)
        batch_size = image_shape[0]
        heights = tf.fill([batch_size], image_shape[1])
        widths = tf.fill([batch_size], image_shape[2])
        sample = (sample_distorted_crop_boxes if self.sampler == "official"
                  else sample_paper_crop_boxes)
        return {"boxes": sample(seed, heights, widths, area_range=(self.min_area, 1.0))}

    def apply_parameters(self, images, parameters):
        """Crops images [B, H, W, C] to parameters["boxes"] and resizes: [B, S, S, 3]."""
        return crop_to_rgb(images, parameters["boxes"], self.size, None, self.vectorized)

    def _evaluate(self, images):
        return self._center_crop(images)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.size, self.size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, sampler=self.sampler, min_area=self.min_area,
                      vectorized=self.vectorized)
        return config


@keras.saving.register_keras_serializable(package="tf_simclr")
class RandomFlip(base.SeededLayer):
    """Horizontal flip of each image with probability `probability` (official: 0.5).

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}); `seed`
    optional int [2]. Returns float32 [B, H, W, 3]; identity when training=False.
    """

    def __init__(self, probability=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        base.check_probability("probability", probability)
        self.probability = probability

    def sample_parameters(self, image_shape, seed):
        """{"flip": bool [B]}."""
        coins = tf.random.stateless_uniform([base.batch_size(image_shape)], seed)
        return {"flip": coins < self.probability}

    def apply_parameters(self, images, parameters):
        return flip_rgb(images, parameters["flip"])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(probability=self.probability)
        return config


def flip_rgb(images, flip):
    """images [B, H, W, C] as float32 RGB, mirrored left-right where flip [B]."""
    images = base.to_rgb(images)
    return tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)


@keras.saving.register_keras_serializable(package="tf_simclr")
class CenterCropResize(keras.layers.Layer):
    """Official eval preprocessing: central crop of 0.875, bicubic resize to size.

    The box keeps 0.875 of the less-cropped side, has a square aspect, is
    rint-rounded and sits at ((dim - crop) + 1) // 2 (crop_boxes.center_crop_boxes);
    then tf.image.resize(bicubic) to size x size and a clip to [0, 1]. For
    size <= plan.EVAL_NO_CROP_MAX_SIDE (32, CIFAR) the official code neither crops
    nor resizes: images must already be size x size, else a ValueError (or, for
    shapes known only at run time, an InvalidArgumentError) is raised rather than
    resizing silently.

    Args:
      size: output side S.
      crop_proportion: of the less-cropped side.

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}).
    Returns float32 [B, S, S, 3] (or [S, S, 3]).
    """

    def __init__(self, size, crop_proportion=EVAL_CROP_PROPORTION, **kwargs):
        super().__init__(**kwargs)
        base.check_positive_int("size", size)
        if not 0.0 < crop_proportion <= 1.0:
            raise ValueError("Expected `crop_proportion` in (0, 1]. "
                             f"Received: crop_proportion={crop_proportion!r}")
        self.size = size
        self.crop_proportion = crop_proportion

    def crop_box(self, height, width):
        """int32 [4] (offset_y, offset_x, crop_height, crop_width) for one image size."""
        return center_crop_boxes([height], [width], self.crop_proportion)[0]

    def call(self, images):
        images, single = base.check_images(images)
        rgb = base.to_rgb(images)
        if not plan.eval_crops(self.size):
            limit = plan.EVAL_NO_CROP_MAX_SIDE
            static_size = tuple(images.shape[1:3])
            if None not in static_size and static_size != (self.size, self.size):
                raise ValueError(f"CenterCropResize({self.size}) does no crop or resize at "
                                 f"size <= {limit} (as official); expected "
                                 f"{self.size}x{self.size} images. Received: shape={images.shape}")
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(images)[1:3], [self.size, self.size],
                    message=f"CenterCropResize({self.size}) expects {self.size}x{self.size} "
                            f"images (no crop or resize at size <= {limit})")]):
                output = tf.identity(rgb)
        else:
            box = self.crop_box(tf.shape(images)[1], tf.shape(images)[2])
            output = resize_crop(rgb, box, self.size)
        output = tf.clip_by_value(output, 0.0, 1.0)
        return output[0] if single else output

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.size, self.size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, crop_proportion=self.crop_proportion)
        return config
