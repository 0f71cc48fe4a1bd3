"""Batched image ops of the SimCLR augmentation, with explicit per-image parameters.

Everything here is a pure function of its arguments. The random parts are the
`sample_*` functions, which draw per-image parameters from an explicit stateless
seed (an int tensor of shape [2]); the other functions apply given parameters to a
batch of images. `tf_simclr.augment` wraps both into Keras layers.

Each op reproduces the TensorFlow op that the official SimCLR code
(google-research/simclr, tf2/data_util.py) calls on one image at a time, but takes
one parameter per image of the batch:

| here                          | official, per image                                  |
|-------------------------------|------------------------------------------------------|
| sample_distorted_crop_boxes   | tf.image.sample_distorted_bounding_box               |
| crop_and_resize               | tf.image.crop_to_bounding_box + tf.image.resize      |
|                               | (bicubic, half-pixel centers, no antialias)          |
| center_crop_boxes             | data_util._compute_crop_shape + center_crop offsets  |
| adjust_brightness / shift_... | image * factor (v2) / tf.image.adjust_brightness (v1)|
| adjust_contrast               | tf.image.adjust_contrast                             |
| adjust_saturation             | tf.image.adjust_saturation                           |
| adjust_hue                    | tf.image.adjust_hue                                  |
| rgb_to_grayscale              | tf.image.rgb_to_grayscale, tiled to 3 channels       |
| gaussian_blur                 | data_util.gaussian_blur (zero 'SAME' padding)        |

Images are float32 [B, H, W, C] unless stated otherwise; "boxes" are int32
[B, 4] rows (offset_y, offset_x, height, width) in pixels.
"""

import math

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as xla_ops

GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
BRIGHTNESS_IMPLS = ("simclrv2", "simclrv1")
NUM_JITTER_OPS = 4  # brightness, contrast, saturation, hue (this order of op ids)

# tf.image.resize(method="bicubic") looks its Keys (a=-0.5) weights up in a table
# of 1024 steps per pixel instead of evaluating the cubic; so do we, to match it.
_KEYS_A = -0.5
_KEYS_TABLE_SIZE = 1024
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _keys_cubic_tables():
    """Keys cubic weights at distances t (near) and 1 + t (far), t = i / 1024."""
    steps = (np.arange(_KEYS_TABLE_SIZE + 1) / _KEYS_TABLE_SIZE).astype(np.float32)
    t = steps.astype(np.float64)
    near = ((_KEYS_A + 2) * t - (_KEYS_A + 3)) * t * t + 1
    f = (steps + np.float32(1.0)).astype(np.float64)
    far = ((_KEYS_A * f - 5 * _KEYS_A) * f + 8 * _KEYS_A) * f - 4 * _KEYS_A
    return near.astype(np.float32), far.astype(np.float32)


_KEYS_NEAR, _KEYS_FAR = _keys_cubic_tables()


def to_float_images(images):
    """uint8 [..., C] scaled by 1/255 (as tf.image.convert_image_dtype), or float → float32."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) * (1.0 / 255.0)
    if images.dtype.is_floating:
        return tf.cast(images, tf.float32)
    raise ValueError(f"Expected uint8 or float images. Received: dtype={images.dtype.name}")


def _uniform_ints(uniforms, counts):
    """Integers uniform in [0, counts) from uniforms in [0, 1); 0 where counts <= 0."""
    counts = tf.cast(tf.maximum(counts, 1), tf.float64)
    ints = tf.floor(tf.cast(uniforms, tf.float64) * counts)
    return tf.cast(tf.minimum(ints, counts - 1), tf.int32)


def _first_accepted(accepted, candidates, fallback):
    """Per row, the first candidate whose `accepted` is True, else `fallback`.

    accepted: bool [B, A]; candidates: int32 [B, A, 4]; fallback: int32 [B, 4].
    """
    attempts = tf.shape(accepted)[1]
    index = tf.reduce_min(tf.where(accepted, tf.range(attempts)[None, :], attempts), axis=1)
    chosen = tf.gather(candidates, tf.minimum(index, attempts - 1), axis=1, batch_dims=1)
    return tf.where((index < attempts)[:, None], chosen, fallback)


def _whole_image_boxes(heights, widths):
    zeros = tf.zeros_like(heights)
    return tf.stack([zeros, zeros, heights, widths], axis=1)


def sample_distorted_crop_boxes(seed, heights, widths, min_object_covered=0.1,
                                aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
                                max_attempts=100):
    """Crop boxes with the distribution of tf.image.sample_distorted_bounding_box.

    Matches the op called with bounding_boxes = the whole image: each of
    `max_attempts` candidates draws aspect = width/height uniform in
    `aspect_ratio_range`, an integer height uniform between the heights that give
    the minimum and maximum area at that aspect (lrint-rounded, capped so that the
    rounded width fits), width = lrint(height * aspect), and a top-left corner
    uniform in [0, H - height) x [0, W - width) (the op never puts the crop on the
    last row/column offset). A candidate is rejected when rounding pushes its area
    out of `area_range`, it does not fit, or it covers less than
    `min_object_covered` of the image. The first accepted candidate wins; after
    `max_attempts` rejections the box is the whole image. All candidates of all
    images are drawn at once.

    Args:
      seed: int tensor [2].
      heights, widths: int32 [B], the image sizes.
    Returns:
      int32 [B, 4] boxes (offset_y, offset_x, height, width).
    """
    heights = tf.convert_to_tensor(heights, tf.int32)
    widths = tf.convert_to_tensor(widths, tf.int32)
    batch_size = tf.shape(heights)[0]
    u_aspect, u_height, u_y, u_x = tf.unstack(
        tf.random.stateless_uniform([4, batch_size, max_attempts], seed), axis=0)
    image_h = heights[:, None]
    image_w = widths[:, None]
    image_hf = tf.cast(image_h, tf.float32)
    image_wf = tf.cast(image_w, tf.float32)

    min_aspect = tf.constant(aspect_ratio_range[0], tf.float32)
    max_aspect = tf.constant(aspect_ratio_range[1], tf.float32)
    aspect = u_aspect * (max_aspect - min_aspect) + min_aspect
    min_area = tf.constant(area_range[0], tf.float32) * image_wf * image_hf
    max_area = tf.constant(area_range[1], tf.float32) * image_wf * image_hf

    def lrint(x):
        return tf.cast(tf.round(x), tf.int32)

    def width_for(height):
        return lrint(tf.cast(height, tf.float32) * aspect)

    height = lrint(tf.sqrt(min_area / aspect))
    max_height = lrint(tf.sqrt(max_area / aspect))
    # Largest max_height whose rounded width still fits (in double, as the op).
    fitted = tf.cast((tf.cast(image_w, tf.float64) + 0.5 - 1e-7) / tf.cast(aspect, tf.float64),
                     tf.int32)
    fitted = tf.where(width_for(fitted) > image_w, fitted - 1, fitted)
    max_height = tf.where(width_for(max_height) > image_w, fitted, max_height)
    max_height = tf.minimum(max_height, image_h)
    height = tf.minimum(height, max_height)
    height += _uniform_ints(u_height, max_height - height + 1)
    width = width_for(height)

    def area_of(h, w):
        return tf.cast(h * w, tf.float32)

    too_small = area_of(height, width) < min_area
    height = tf.where(too_small, height + 1, height)
    width = width_for(height)
    too_large = area_of(height, width) > max_area
    height = tf.where(too_large, height - 1, height)
    width = width_for(height)
    area = area_of(height, width)
    accepted = ((area >= min_area) & (area <= max_area) & (width <= image_w)
                & (height <= image_h) & (width > 0) & (height > 0)
                & (area >= 1.0)
                & (area / (image_wf * image_hf) >= tf.constant(min_object_covered, tf.float32)))
    offset_y = _uniform_ints(u_y, image_h - height)
    offset_x = _uniform_ints(u_x, image_w - width)
    candidates = tf.stack([offset_y, offset_x, height, width], axis=-1)
    return _first_accepted(accepted, candidates, _whole_image_boxes(heights, widths))


def sample_paper_crop_boxes(seed, heights, widths, aspect_ratio_range=(3 / 4, 4 / 3),
                            area_range=(0.08, 1.0), max_attempts=100):
    """Crop boxes as the SimCLR paper describes them (torchvision's RandomResizedCrop).

    Each candidate draws an area fraction uniform in `area_range` and a log aspect
    ratio (width/height) uniform in log(`aspect_ratio_range`); width =
    round(sqrt(area * aspect)), height = round(sqrt(area / aspect)); the corner is
    uniform over all positions where the crop fits. Candidates that do not fit are
    rejected; the first fitting one wins, else the whole image.

    Args:
      seed: int tensor [2].
      heights, widths: int32 [B], the image sizes.
    Returns:
      int32 [B, 4] boxes (offset_y, offset_x, height, width).
    """
    heights = tf.convert_to_tensor(heights, tf.int32)
    widths = tf.convert_to_tensor(widths, tf.int32)
    batch_size = tf.shape(heights)[0]
    u_area, u_aspect, u_y, u_x = tf.unstack(
        tf.random.stateless_uniform([4, batch_size, max_attempts], seed, dtype=tf.float64),
        axis=0)
    image_h = heights[:, None]
    image_w = widths[:, None]
    image_area = tf.cast(image_h * image_w, tf.float64)
    area = image_area * (area_range[0] + u_area * (area_range[1] - area_range[0]))
    log_low, log_high = math.log(aspect_ratio_range[0]), math.log(aspect_ratio_range[1])
    aspect = tf.exp(log_low + u_aspect * (log_high - log_low))
    width = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    height = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    accepted = (width > 0) & (width <= image_w) & (height > 0) & (height <= image_h)
    offset_y = _uniform_ints(u_y, image_h - height + 1)
    offset_x = _uniform_ints(u_x, image_w - width + 1)
    candidates = tf.stack([offset_y, offset_x, height, width], axis=-1)
    return _first_accepted(accepted, candidates, _whole_image_boxes(heights, widths))


def center_crop_boxes(heights, widths, crop_proportion=0.875, aspect_ratio=1.0):
    """Central aspect-preserving crop boxes of the official eval preprocessing.

    The less-cropped side keeps `crop_proportion` of the image; the box has the
    output's `aspect_ratio` (width/height); sizes are rint-rounded and offsets are
    ((dim - crop) + 1) // 2, as data_util.center_crop.

    Args:
      heights, widths: int32 [B].
    Returns:
      int32 [B, 4] boxes (offset_y, offset_x, height, width).
    """
    heights = tf.convert_to_tensor(heights, tf.int32)
    widths = tf.convert_to_tensor(widths, tf.int32)
    height_f = tf.cast(heights, tf.float32)
    width_f = tf.cast(widths, tf.float32)
    proportion = tf.constant(crop_proportion, tf.float32)
    aspect = tf.constant(aspect_ratio, tf.float32)
    output_wider = aspect > width_f / height_f
    crop_h = tf.where(output_wider, tf.math.rint(proportion / aspect * width_f),
                      tf.math.rint(proportion * height_f))
    crop_w = tf.where(output_wider, tf.math.rint(proportion * width_f),
                      tf.math.rint(proportion * aspect * height_f))
    crop_h = tf.cast(crop_h, tf.int32)
    crop_w = tf.cast(crop_w, tf.int32)
    return tf.stack([(heights - crop_h + 1) // 2, (widths - crop_w + 1) // 2, crop_h, crop_w],
                    axis=1)


def bicubic_taps(starts, lengths, out_size):
    """Source pixels and weights of tf.image.resize(method="bicubic") along one axis.

    Resamples the segment [start, start + length) of an axis to `out_size` pixels
    with half-pixel centers and Keys' cubic (a=-0.5, weights from TF's 1024-step
    table); taps outside the segment get weight 0 and the rest are renormalised
    (TF's border rule; the ignored taps' indices are clamped into the segment).

    Args:
      starts, lengths: int32 [B].
    Returns:
      indices int32 [B, out_size, 4] (absolute positions on the axis) and
      weights float32 [B, out_size, 4].
    """
    starts = tf.convert_to_tensor(starts, tf.int32)
    lengths = tf.convert_to_tensor(lengths, tf.int32)
    scale = tf.cast(lengths, tf.float32) / tf.constant(out_size, tf.float32)
    source = (tf.range(out_size, dtype=tf.float32)[None, :] + 0.5) * scale[:, None] - 0.5
    floor = tf.floor(source)
    step = tf.cast(tf.round((source - floor) * _KEYS_TABLE_SIZE), tf.int32)
    near, far = tf.constant(_KEYS_NEAR), tf.constant(_KEYS_FAR)
    back = _KEYS_TABLE_SIZE - step
    weights = tf.stack([tf.gather(far, step), tf.gather(near, step),
                        tf.gather(near, back), tf.gather(far, back)], axis=-1)
    taps = tf.cast(floor, tf.int32)[..., None] + tf.range(-1, 3)
    length = lengths[:, None, None]
    weights = tf.where((taps >= 0) & (taps < length), weights, 0.0)
    w0, w1, w2, w3 = tf.unstack(weights, axis=-1)
    total = w0 + w1 + w2 + w3
    inverse = tf.where(tf.abs(total) >= 1000.0 * _FLOAT32_TINY, 1.0 / total, 1.0)
    weights = weights * inverse[..., None]
    indices = starts[:, None, None] + tf.clip_by_value(taps, 0, length - 1)
    return indices, weights


def _weighted_taps(gathered, weights, tap_axis):
    """sum_k weights[..., k] * gathered[k along tap_axis], in TF's summation order."""
    taps = tf.unstack(gathered, axis=tap_axis)
    total = taps[0] * weights[0]
    for tap, weight in zip(taps[1:], weights[1:]):
        total += tap * weight
    return total


def crop_and_resize(images, boxes, size, flip=None):
    """Bicubic resize of one crop box per image to size x size, optionally mirrored.

    Equals tf.image.resize(crop, [size, size], "bicubic") of each image's explicit
    crop (to float32 rounding), for crops of different sizes in one batch: each
    output row/column is a 4-tap weighted sum of gathered source rows/columns.

    Args:
      images: [B, H, W, C] float32.
      boxes: int32 [B, 4] (offset_y, offset_x, height, width).
      size: output side S.
      flip: optional bool [B]; True mirrors that image left-right (folded into the
        column taps, so it costs nothing).
    Returns:
      float32 [B, S, S, C].
    """
    offset_y, offset_x, height, width = tf.unstack(boxes, axis=1)
    rows, row_weights = bicubic_taps(offset_y, height, size)
    cols, col_weights = bicubic_taps(offset_x, width, size)
    if flip is not None:
        cols = tf.where(flip[:, None, None], tf.reverse(cols, [1]), cols)
        col_weights = tf.where(flip[:, None, None], tf.reverse(col_weights, [1]), col_weights)
    return resample(images, rows, row_weights, cols, col_weights)


def resample(images, rows, row_weights, cols, col_weights):
    """Separable 4-tap resampling: rows first, then columns (as TF's bicubic kernel).

    Args:
      images: [B, H, W, C] float32.
      rows, row_weights: [B, S, 4] int32 / float32 taps along H (see bicubic_taps).
      cols, col_weights: [B, S, 4] taps along W.
    Returns:
      float32 [B, S, S, C].
    """
    gathered = tf.gather(images, rows, axis=1, batch_dims=1)  # [B, S, 4, W, C]
    per_tap = tf.unstack(row_weights[:, :, :, None, None], axis=2)
    resized_rows = _weighted_taps(gathered, per_tap, tap_axis=2)  # [B, S, W, C]
    gathered = tf.gather(resized_rows, cols, axis=2, batch_dims=1)  # [B, S, S, 4, C]
    per_tap = tf.unstack(col_weights[:, None, :, :, None], axis=3)
    return _weighted_taps(gathered, per_tap, tap_axis=3)


def _per_image(values):
    return tf.reshape(values, [-1, 1, 1, 1])


def adjust_brightness(images, factors):
    """SimCLR v2 brightness: images * factor. factors: float32 [B]."""
    return images * _per_image(factors)


def shift_brightness(images, deltas):
    """SimCLR v1 brightness, tf.image.adjust_brightness: images + delta. deltas: [B]."""
    return images + _per_image(deltas)


def adjust_contrast(images, factors):
    """tf.image.adjust_contrast: (x - mean) * factor + mean, mean per image and channel."""
    means = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return (images - means) * _per_image(factors) + means


def _to_planes(images):
    """[B, H, W, 3] -> three [B, H, W] channel planes (contiguous: XLA vectorizes them)."""
    return tf.unstack(tf.transpose(images, [3, 0, 1, 2]))


def _from_planes(planes):
    return tf.transpose(tf.stack(planes), [1, 2, 3, 0])


def _per_plane(values):
    return tf.reshape(values, [-1, 1, 1])


def _recolor_planes(red, green, blue, saturation_factors, hue_shift, saturation_mask=None):
    """HSV saturation scaling and hue rotation of channel planes, computed in RGB.

    Keeps each pixel's max channel v; where `saturation_factors` applies, scales
    its chroma c = v - min by r = min(factor, v / c) (= clip(s * factor, 0, 1) / s
    with s = c / v, as tf.image.adjust_saturation); rotates its hue (in sextants,
    [0, 6)) by `hue_shift`. Channels are rebuilt from (min, chroma, hue) as in TF's
    AdjustHue kernel.

    Args:
      red, green, blue: float32 [B, H, W].
      saturation_factors: None (keep the chroma) or float32 [B, 1, 1] factors >= 0.
      hue_shift: float32 [B] hue rotation in sextants.
      saturation_mask: optional bool [B, 1, 1]; images where it is False keep
        their chroma.
    Returns:
      (red, green, blue) float32 [B, H, W].
    """
    value = tf.maximum(tf.maximum(red, green), blue)
    chroma = value - tf.minimum(tf.minimum(red, green), blue)
    inverse = 1.0 / tf.where(chroma > 0, chroma, 1.0)
    hue = tf.where(red == value, (green - blue) * inverse,
                   tf.where(green == value, (blue - red) * inverse + 2.0,
                            (red - green) * inverse + 4.0))
    hue = tf.where(chroma > 0, hue, 0.0)
    hue = tf.where(hue < 0, hue + 6.0, hue)
    hue += _per_plane(hue_shift)
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


def adjust_saturation(images, factors):
    """tf.image.adjust_saturation: HSV saturation * factor, clipped to [0, 1].

    Pixels with max channel <= 0 become that max (the op's saturation is 0 there).
    factors: float32 [B] >= 0.
    """
    planes = _recolor_planes(*_to_planes(images), _per_plane(factors),
                             tf.zeros_like(factors))
    return _from_planes(planes)


def adjust_hue(images, deltas):
    """tf.image.adjust_hue: rotate the HSV hue by delta turns, keeping max and min.

    deltas: float32 [B] in [-0.5, 0.5].
    """
    return _from_planes(_recolor_planes(*_to_planes(images), None, deltas * 6.0))


def rgb_to_grayscale(images):
    """tf.image.rgb_to_grayscale, tiled back to 3 channels: [B, H, W, 3]."""
    gray = tf.tensordot(images, tf.constant(GRAYSCALE_WEIGHTS, tf.float32), [[-1], [0]])
    return tf.tile(gray[..., None], [1, 1, 1, 3])


def _barrier(planes):
    """XLA optimization barrier: the planes are computed once, before their consumers.

    Each jitter stage reads the previous stage's pixels many times (max, min, hue,
    means); without the barrier XLA fuses the whole chain and recomputes earlier
    stages inside later ones, which made the jitter several times slower to run
    and to compile. Outside XLA it is the identity.
    """
    result = xla_ops.optimization_barrier(tf.stack(planes))
    return tf.unstack(result[0] if isinstance(result, (list, tuple)) else result)


def _select_per_image(mask, when_true, when_false):
    return tf.where(tf.reshape(mask, [-1, 1, 1, 1]), when_true, when_false)


def _jitter_planes(planes, op_order, brightness, contrast, saturation, hue, brightness_impl):
    """color_jitter on channel planes: 3 x [B, H, W] -> 3 x [B, H, W]."""
    if brightness_impl not in BRIGHTNESS_IMPLS:
        raise ValueError(f"Expected brightness_impl in {BRIGHTNESS_IMPLS}. "
                         f"Received: brightness_impl={brightness_impl!r}")
    if brightness_impl == "simclrv2":
        brightness_scale, brightness_shift = brightness, tf.zeros_like(brightness)
    else:
        brightness_scale, brightness_shift = tf.ones_like(brightness), brightness
    for stage in range(NUM_JITTER_OPS):
        op = op_order[:, stage]
        is_contrast = _per_plane(tf.equal(op, 1))
        scale = tf.where(is_contrast, _per_plane(contrast), _per_plane(brightness_scale))
        affine = []
        for plane in planes:
            mean = tf.reduce_mean(plane, axis=[1, 2], keepdims=True)
            center = tf.where(is_contrast, mean, 0.0)
            shift = tf.where(is_contrast, mean, _per_plane(brightness_shift))
            affine.append((plane - center) * scale + shift)
        recolored = _recolor_planes(*planes, _per_plane(saturation),
                                    tf.where(tf.equal(op, 3), hue * 6.0, 0.0),
                                    saturation_mask=_per_plane(tf.equal(op, 2)))
        is_affine = _per_plane(op < 2)
        planes = _barrier([tf.clip_by_value(tf.where(is_affine, a, r), 0.0, 1.0)
                           for a, r in zip(affine, recolored)])
    return planes


def color_jitter(images, op_order, brightness, contrast, saturation, hue,
                 brightness_impl="simclrv2"):
    """The four jitter ops in a per-image order, each followed by a clip to [0, 1].

    Static shapes throughout (so XLA fuses it), on contiguous channel planes: at
    each of the 4 stages, the two affine ops (brightness, contrast) share one
    candidate, (x - center) * scale + shift, and the two HSV ops (saturation, hue)
    share another, _recolor_planes with per-image (factor, shift); each image keeps
    the candidate of its own op.

    Args:
      images: float32 [B, H, W, 3].
      op_order: int32 [B, 4], a permutation of op ids per image
        (0 brightness, 1 contrast, 2 saturation, 3 hue).
      brightness: float32 [B], a factor ("simclrv2") or an additive delta ("simclrv1").
      contrast, saturation: float32 [B] factors; hue: float32 [B] deltas in turns.
      brightness_impl: "simclrv2" or "simclrv1".
    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    return _from_planes(_jitter_planes(_to_planes(images), op_order, brightness, contrast,
                                       saturation, hue, brightness_impl))


def color_distortion(images, jitter, op_order, brightness, contrast, saturation, hue,
                     grayscale, brightness_impl="simclrv2"):
    """Official random_color_jitter with given coins: jitter where `jitter`, then gray.

    Args:
      images: float32 [B, H, W, 3].
      jitter, grayscale: bool [B] coins.
      op_order, brightness, contrast, saturation, hue, brightness_impl: see color_jitter.
    Returns:
      float32 [B, H, W, 3].
    """
    planes = _barrier(_to_planes(images))  # computed once (e.g. a crop-resize feeding us)
    jittered = _jitter_planes(planes, op_order, brightness, contrast, saturation, hue,
                              brightness_impl)
    jitter = _per_plane(jitter)
    planes = [tf.where(jitter, j, p) for j, p in zip(jittered, planes)]
    weights = [np.float32(w) for w in GRAYSCALE_WEIGHTS]
    gray = planes[0] * weights[0] + planes[1] * weights[1] + planes[2] * weights[2]
    grayscale = _per_plane(grayscale)
    return _from_planes([tf.where(grayscale, gray, p) for p in planes])


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


def random_blur(images, blur, sigmas, radius):
    """Blur only the images where `blur`, each with its sigma; then clip to [0, 1].

    The official batch_random_blur blurs every image and keeps it where the coin
    says so; blurring only the chosen ones gives the same result for half the work.

    Args:
      images: float32 [B, H, W, C].
      blur: bool [B]; sigmas: float32 [B]; radius: python int.
    Returns:
      float32 [B, H, W, C] in [0, 1].
    """
    chosen = tf.where(blur)

    def blur_chosen():
        blurred = gaussian_blur(tf.gather_nd(images, chosen), tf.gather_nd(sigmas, chosen),
                                radius)
        return tf.tensor_scatter_nd_update(images, chosen, blurred)

    # A convolution over zero channels is an error, so a batch without a blurred
    # image (e.g. a single image whose coin says no) skips it.
    images = tf.cond(tf.size(chosen) > 0, blur_chosen, lambda: images)
    return tf.clip_by_value(images, 0.0, 1.0)
