"""Colour distortion of the official code: jitter (brightness, contrast,
saturation, hue in a per-image random order, a clip after each), then grayscale,
then a clip to [0, 1].

`color_distortion` applies explicit per-image parameters to float32 images
[B, H, W, 3], image by image (one XLA program per image that evaluates only its
own op at each stage) or batched (one XLA program per stage over the batch);
`ColorDistortion` is the Keras layer that draws them. Each op reproduces its
tf.image counterpart (adjust_brightness / a factor for v2, adjust_contrast,
adjust_saturation, adjust_hue, rgb_to_grayscale tiled to 3 channels).
"""

import keras
import numpy as np
import tensorflow as tf

from tf_simclr.augment import base, plan
from tf_simclr.config import COLOR_JITTER_IMPLS

GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
NUM_JITTER_OPS = 4  # brightness, contrast, saturation, hue (this order of op ids)
MAX_COLOR_JITTER_STRENGTH = 1.25  # contrast/saturation factors 1 - 0.8s must stay >= 0


def _per_plane(values):
    return tf.reshape(values, [-1, 1, 1])


def _recolor_planes(red, green, blue, saturation_factors, hue_shift, saturation_mask=None):
    """HSV saturation scaling and hue rotation of channel planes, computed in RGB.

    Keeps each pixel's max channel v; where `saturation_factors` is given, scales
    its chroma c = v - min by r = min(factor, v / c) (= clip(s * factor, 0, 1) / s
    with s = c / v, as tf.image.adjust_saturation); rotates its hue (in sextants,
    [0, 6)) by `hue_shift`. Channels are rebuilt from (min, chroma, hue) as in TF's
    AdjustHue kernel.

    Args:
      red, green, blue: float32 planes of one shape.
      saturation_factors: None (keep the chroma) or float32 factors >= 0,
        broadcastable to the planes.
      hue_shift: float32 hue rotation in sextants, broadcastable to the planes.
      saturation_mask: optional bool, broadcastable; where False the chroma is kept.
    Returns:
      (red, green, blue) float32.
    """
    value = tf.maximum(tf.maximum(red, green), blue)
    chroma = value - tf.minimum(tf.minimum(red, green), blue)
    inverse = 1.0 / tf.where(chroma > 0, chroma, 1.0)
    hue = tf.where(red == value, (green - blue) * inverse,
                   tf.where(green == value, (blue - red) * inverse + 2.0,
                            (red - green) * inverse + 4.0))
    hue = tf.where(chroma > 0, hue, 0.0)
    hue = tf.where(hue < 0, hue + 6.0, hue)
    hue += hue_shift
    hue = tf.where(hue < 0, hue + 6.0, tf.where(hue >= 6.0, hue - 6.0, hue))
    if saturation_factors is not None:
        ratio = tf.minimum(saturation_factors, tf.maximum(value, 0.0) * inverse)
        if saturation_mask is not None:
            ratio = tf.where(saturation_mask, ratio, 1.0)
        chroma *= ratio
    minimum = value - chroma
    red = minimum + chroma * tf.clip_by_value(tf.abs(hue - 3.0) - 1.0, 0.0, 1.0)
    green = minimum + chroma * tf.clip_by_value(2.0 - tf.abs(hue - 2.0), 0.0, 1.0)
    blue = minimum + chroma * tf.clip_by_value(2.0 - tf.abs(hue - 4.0), 0.0, 1.0)
    return red, green, blue



def _jitter_stage(planes, op, scale, shift, contrast, saturation, hue):
    """One jitter op of one image (op id: 0 brightness, 1 contrast, 2 saturation,
    3 hue) on its 3 planes [H, W], then the clip to [0, 1]."""

    def affine(center, factor, offset):
        return [(plane - center(plane)) * factor + offset(plane) for plane in planes]

    def no_center(plane):
        return 0.0

    def mean(plane):
        return tf.reduce_mean(plane)

    branches = [
        lambda: tf.stack(affine(no_center, scale, lambda plane: shift)),  # brightness
        lambda: tf.stack(affine(mean, contrast, mean)),                   # contrast
        lambda: tf.stack(_recolor_planes(*planes, saturation, 0.0)),      # saturation
        lambda: tf.stack(_recolor_planes(*planes, None, hue * 6.0)),      # hue
    ]
    return tf.unstack(tf.clip_by_value(tf.switch_case(op, branches), 0.0, 1.0))


@tf.function(jit_compile=True)
def distort_one(image, jitter, op_order, scale, shift, contrast, saturation, hue,
                grayscale):
    """color_distortion of one image [H, W, 3], as one XLA program.

    Each jitter stage is an XLA conditional that computes only the image's own op
    (the stage's result is materialised once, so later stages do not recompute it).
    Compiled once per image size, for any batch size.
    """
    planes = tf.unstack(tf.transpose(image, [2, 0, 1]))  # contiguous planes vectorize

    def jittered():
        stage_planes = planes
        for stage in range(NUM_JITTER_OPS):
            stage_planes = _jitter_stage(stage_planes, op_order[stage], scale, shift,
                                         contrast, saturation, hue)
        return tf.stack(stage_planes)

    planes = tf.unstack(tf.cond(jitter, jittered, lambda: tf.stack(planes)))
    weights = [np.float32(w) for w in GRAYSCALE_WEIGHTS]
    gray = planes[0] * weights[0] + planes[1] * weights[1] + planes[2] * weights[2]
    planes = tf.where(grayscale, tf.stack([gray, gray, gray]), tf.stack(planes))
    return tf.transpose(tf.clip_by_value(planes, 0.0, 1.0), [1, 2, 0])


@tf.function(jit_compile=True)
def _jitter_stage_batched(planes, op, scale, shift, contrast, saturation, hue):
    """One jitter stage of a whole batch of small images: planes float32 [3, B, H, W].

    Every image gets both candidates, the affine one (brightness or contrast) and
    the HSV one (saturation or hue), and keeps its own op's; then the clip. One
    XLA program per stage, so a stage's pixels are materialised once and never
    recomputed inside the next stage.
    """
    is_contrast = _per_plane(tf.equal(op, 1))
    factor = tf.where(is_contrast, _per_plane(contrast), _per_plane(scale))
    means = tf.reduce_mean(planes, axis=[2, 3], keepdims=True)
    center = tf.where(is_contrast, means, 0.0)
    offset = tf.where(is_contrast, means, _per_plane(shift))
    affine = (planes - center) * factor + offset
    recolored = tf.stack(_recolor_planes(*tf.unstack(planes), _per_plane(saturation),
                                         _per_plane(tf.where(tf.equal(op, 3), hue * 6.0, 0.0)),
                                         saturation_mask=_per_plane(tf.equal(op, 2))))
    return tf.clip_by_value(tf.where(_per_plane(op < 2), affine, recolored), 0.0, 1.0)


@tf.function(jit_compile=True)
def _to_planes_batched(images):
    return tf.transpose(images, [3, 0, 1, 2])


@tf.function(jit_compile=True)
def _finish_batched(planes, jittered, jitter, grayscale):
    planes = tf.where(_per_plane(jitter), jittered, planes)
    weights = [np.float32(w) for w in GRAYSCALE_WEIGHTS]
    gray = planes[0] * weights[0] + planes[1] * weights[1] + planes[2] * weights[2]
    planes = tf.where(_per_plane(grayscale), tf.stack([gray, gray, gray]), planes)
    return tf.transpose(tf.clip_by_value(planes, 0.0, 1.0), [1, 2, 3, 0])


def _color_distortion_batched(images, jitter, op_order, scale, shift, contrast, saturation,
                              hue, grayscale):
    planes = _to_planes_batched(images)
    jittered = planes
    for stage in range(NUM_JITTER_OPS):
        jittered = _jitter_stage_batched(jittered, op_order[:, stage], scale, shift, contrast,
                                         saturation, hue)
    return _finish_batched(planes, jittered, jitter, grayscale)


def color_arguments(jitter, op_order, brightness, contrast, saturation, hue, grayscale,
                    brightness_impl="simclrv2"):
    """The per-image arguments of distort_one after `images`, as tensors: (jitter,
    op_order, scale, shift, contrast, saturation, hue, grayscale), the brightness
    split into a factor `scale` (simclrv2) or an additive `shift` (simclrv1)."""
    if brightness_impl not in COLOR_JITTER_IMPLS:
        raise ValueError(f"Expected brightness_impl in {COLOR_JITTER_IMPLS}. "
                         f"Received: brightness_impl={brightness_impl!r}")
    brightness = tf.convert_to_tensor(brightness, tf.float32)
    if brightness_impl == "simclrv2":
        scale, shift = brightness, tf.zeros_like(brightness)
    else:
        scale, shift = tf.ones_like(brightness), brightness
    return (tf.convert_to_tensor(jitter, tf.bool), tf.convert_to_tensor(op_order, tf.int32),
            scale, shift, tf.convert_to_tensor(contrast, tf.float32),
            tf.convert_to_tensor(saturation, tf.float32),
            tf.convert_to_tensor(hue, tf.float32), tf.convert_to_tensor(grayscale, tf.bool))


def color_distortion(images, jitter, op_order, brightness, contrast, saturation, hue,
                     grayscale, brightness_impl="simclrv2", vectorized=False):
    """Official random_color_jitter with given coins (jitter where `jitter`, then
    grayscale where `grayscale`), then the official final clip to [0, 1].

    The jitter is the four ops in each image's own order, each followed by a clip
    to [0, 1]. Large images (not plan.runs_batched) go image by image (tf.map_fn)
    through one XLA program per image size that evaluates only each image's own op
    at each stage: batched, every op is evaluated for every image and selected (4x
    the work), and TF's native AdjustHue / AdjustSaturation kernels are slower
    than the fused program (bench/bench_augment.py). Small images, or
    `vectorized`, take the batched form (one XLA program per stage over the batch).

    Args:
      images: float32 [B, H, W, 3].
      jitter, grayscale: bool [B] coins.
      op_order: int32 [B, 4], a permutation of op ids per image
        (0 brightness, 1 contrast, 2 saturation, 3 hue).
      brightness: float32 [B], a factor ("simclrv2") or an additive delta ("simclrv1").
      contrast, saturation: float32 [B] factors; hue: float32 [B] deltas in turns.
      brightness_impl: "simclrv2" or "simclrv1".
      vectorized: True takes the batched form at any size.
    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    arguments = color_arguments(jitter, op_order, brightness, contrast, saturation, hue,
                                grayscale, brightness_impl)
    if vectorized or plan.runs_batched(images):
        return _color_distortion_batched(images, *arguments)
    return tf.map_fn(lambda args: distort_one(*args), (images, *arguments),
                     fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
                     parallel_iterations=plan.PARALLEL_IMAGES)


def distort_colors(images, color, brightness_impl, vectorized):
    """color_distortion of images [B, H, W, C] (as float32 RGB) with the parameter
    dict `color` of ColorDistortion.sample_parameters: float32 [B, H, W, 3]."""
    return color_distortion(base.to_rgb(images), brightness_impl=brightness_impl,
                            vectorized=vectorized, **color)


@keras.saving.register_keras_serializable(package="tf_simclr")
class ColorDistortion(base.SeededLayer):
    """Official random color distortion of strength s: jitter, then grayscale.

    With probability 0.8 an image gets brightness (0.8s), contrast (0.8s),
    saturation (0.8s) and hue (0.2s) in a random order of its own, each followed
    by a clip to [0, 1]; independently, with probability 0.2 it then becomes
    grayscale (3 equal channels). Brightness "simclrv2" multiplies by a factor
    uniform in [max(0, 1 - 0.8s), 1 + 0.8s); "simclrv1" adds a delta uniform in
    [-0.8s, 0.8s). s = 0 turns the layer off (official: no color distortion at all).

    Args:
      strength: s in [0, 1.25] (the official op rejects contrast factors < 0).
      impl: "simclrv2" or "simclrv1" (brightness only).
      vectorized: every op on the whole batch at any image size (static shapes)
        instead of image by image for large images (fastest on a CPU).
      seed: optional int for the layer's seed generator.

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}); `seed`
    optional int [2]. Returns float32 [B, H, W, 3] in [0, 1] (training=False: the
    images as float RGB).
    """

    def __init__(self, strength=1.0, impl="simclrv2", vectorized=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not 0.0 <= strength <= MAX_COLOR_JITTER_STRENGTH:
            raise ValueError(f"Expected `strength` in [0, {MAX_COLOR_JITTER_STRENGTH}] "
                             "(contrast and saturation factors 1 - 0.8 * strength must be "
                             ">= 0, as in tf.image.random_contrast). "
                             f"Received: strength={strength!r}")
        if impl not in COLOR_JITTER_IMPLS:
            raise ValueError(f"Expected `impl` in {COLOR_JITTER_IMPLS}. Received: impl={impl!r}")
        base.check_bool("vectorized", vectorized)
        self.strength = strength
        self.impl = impl
        self.vectorized = vectorized

    @property
    def enabled(self):
        return self.strength > 0

    def sample_parameters(self, image_shape, seed):
        """Per-image draws: {"jitter": bool [B], "op_order": int32 [B, 4] (a
        permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue), "brightness",
        "contrast", "saturation", "hue": float32 [B], "grayscale": bool [B]}."""
        batch_size = base.batch_size(image_shape)
        jitter, brightness, contrast, saturation, hue, grayscale = tf.unstack(
            tf.random.stateless_uniform([6, batch_size], seed), axis=0)
        order_keys = tf.random.stateless_uniform([batch_size, NUM_JITTER_OPS],
                                                 base.stage_seed(seed, 1))
        delta = 0.8 * self.strength

        def uniform(u, low, high):
            return low + u * (high - low)

        if self.impl == "simclrv2":
            brightness = uniform(brightness, max(0.0, 1.0 - delta), 1.0 + delta)
        else:
            brightness = uniform(brightness, -delta, delta)
        return {
            "jitter": jitter < 0.8,
            "op_order": tf.cast(tf.argsort(order_keys, axis=1), tf.int32),
            "brightness": brightness,
            "contrast": uniform(contrast, 1.0 - delta, 1.0 + delta),
            "saturation": uniform(saturation, 1.0 - delta, 1.0 + delta),
            "hue": uniform(hue, -0.2 * self.strength, 0.2 * self.strength),
            "grayscale": grayscale < 0.2,
        }

    def apply_parameters(self, images, parameters):
        if not self.enabled:
            return base.to_rgb(images)
        return distort_colors(images, parameters, self.impl, self.vectorized)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(strength=self.strength, impl=self.impl, vectorized=self.vectorized)
        return config
