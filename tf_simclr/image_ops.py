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

GRAYSCALE_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
BRIGHTNESS_IMPLS = ("simclrv2", "simclrv1")
NUM_JITTER_OPS = 4  # brightness, contrast, saturation, hue (this order of op ids)

# Images processed concurrently by the per-image loops (tf.map_fn).
_PARALLEL_IMAGES = 8
# Up to this many pixels per image, color_distortion runs on the whole batch at
# once: per image, launching its XLA program cost more than the pixel work
# (32 px, batch 256: 37 ms per image vs 9 ms batched; 96 px, batch 128: 40 vs 73).
_SMALL_IMAGE_PIXELS = 64 * 64
# Inputs and outputs up to this many pixels per image are cropped in the matrix
# form (crop_and_resize_vectorized): its dense weights are still cheap there and the
# per-image loop cost more (batch 256, CPU ms per batch: 28 px gray 14 vs 24, 32 px
# RGB 21.5 vs 22.4; at 48 px 51 vs 22).
_SMALL_CROP_PIXELS = 32 * 32


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


def _candidate_draws(seed, heights, widths, max_attempts, dtype=tf.float32):
    """Four uniform draws per candidate box, for the crop samplers.

    Args:
      seed: int tensor [2]; heights, widths: int [B]; max_attempts: A.
    Returns:
      (heights, widths) int32 [B], then four `dtype` [B, A] uniforms in [0, 1).
    """
    heights = tf.convert_to_tensor(heights, tf.int32)
    widths = tf.convert_to_tensor(widths, tf.int32)
    draws = tf.random.stateless_uniform([4, tf.shape(heights)[0], max_attempts], seed,
                                        dtype=dtype)
    return (heights, widths, *tf.unstack(draws, axis=0))


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
    heights, widths, u_aspect, u_height, u_y, u_x = _candidate_draws(
        seed, heights, widths, max_attempts)
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
    heights, widths, u_area, u_aspect, u_y, u_x = _candidate_draws(
        seed, heights, widths, max_attempts, tf.float64)
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


def crop_and_resize(images, boxes, size, flip=None, vectorized=False):
    """Bicubic resize of one crop box per image to size x size, optionally mirrored.

    Each image is tf.image.resize(crop, [size, size], "bicubic") of its explicit
    crop (TF's native ResizeBicubic kernel, half-pixel centers, no antialias), one
    image at a time in a tf.map_fn: the crops have different sizes, and the native
    kernel on one image (in cache) is faster than any batched gather formulation
    we measured (bench/bench_augment.py). Works for any input size, with no
    compilation. `vectorized`, or inputs and outputs of at most 32 x 32 (faster
    there), take the batched matrix form (crop_and_resize_vectorized, the same views
    to 2e-6).

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
    if vectorized or (_is_small(images, _SMALL_CROP_PIXELS)
                      and size * size <= _SMALL_CROP_PIXELS):
        return crop_and_resize_vectorized(images, boxes, size, flip)
    scale = 1.0 / 255.0 if images.dtype == tf.uint8 else None
    if images.dtype not in (tf.uint8, tf.float32):
        images = tf.cast(images, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.int32)
    if flip is None:
        flip = tf.zeros(tf.shape(boxes)[:1], tf.bool)

    def resize_one(args):
        image, box, mirror = args
        offset_y, offset_x, height, width = tf.unstack(box)
        crop = image[None, offset_y:offset_y + height, offset_x:offset_x + width]
        view = tf.raw_ops.ResizeBicubic(images=crop, size=[size, size],
                                        half_pixel_centers=True)[0]
        if scale is not None:
            view *= scale
        return tf.cond(mirror, lambda: tf.reverse(view, [1]), lambda: view)

    return tf.map_fn(resize_one, (images, boxes, flip),
                     fn_output_signature=tf.TensorSpec([size, size, images.shape[-1]],
                                                       tf.float32),
                     parallel_iterations=_PARALLEL_IMAGES)


# TF's ResizeBicubic (half-pixel centers) reads its Keys cubic weights (a = -0.5)
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
    """[..., H, W, 3] -> three [..., H, W] channel planes."""
    return tf.unstack(images, axis=-1)


def _from_planes(planes):
    return tf.stack(planes, axis=-1)


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


def adjust_saturation(images, factors):
    """tf.image.adjust_saturation: HSV saturation * factor, clipped to [0, 1].

    Pixels with max channel <= 0 become that max (the op's saturation is 0 there).
    factors: float32 [B] >= 0.
    """
    return _from_planes(_recolor_planes(*_to_planes(images), _per_plane(factors), 0.0))


def adjust_hue(images, deltas):
    """tf.image.adjust_hue: rotate the HSV hue by delta turns, keeping max and min.

    deltas: float32 [B] in [-0.5, 0.5].
    """
    return _from_planes(_recolor_planes(*_to_planes(images), None, _per_plane(deltas * 6.0)))


def rgb_to_grayscale(images):
    """tf.image.rgb_to_grayscale, tiled back to 3 channels: [B, H, W, 3]."""
    gray = tf.tensordot(images, tf.constant(GRAYSCALE_WEIGHTS, tf.float32), [[-1], [0]])
    return tf.tile(gray[..., None], [1, 1, 1, 3])


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
def _distort_one(image, jitter, op_order, scale, shift, contrast, saturation, hue,
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


def _brightness_scale_shift(brightness, brightness_impl):
    if brightness_impl not in BRIGHTNESS_IMPLS:
        raise ValueError(f"Expected brightness_impl in {BRIGHTNESS_IMPLS}. "
                         f"Received: brightness_impl={brightness_impl!r}")
    if brightness_impl == "simclrv2":
        return brightness, tf.zeros_like(brightness)
    return tf.ones_like(brightness), brightness


def color_distortion(images, jitter, op_order, brightness, contrast, saturation, hue,
                     grayscale, brightness_impl="simclrv2", vectorized=False):
    """Official random_color_jitter with given coins (jitter where `jitter`, then
    grayscale where `grayscale`), then the official final clip to [0, 1].

    The jitter is the four ops in each image's own order, each followed by a clip
    to [0, 1]. Above 64 x 64 pixels it runs image by image (tf.map_fn) through
    one XLA program per image size that evaluates only each image's own op at each
    stage: batched, every op is evaluated for every image and selected (4x the
    work); TF's native AdjustHue / AdjustSaturation kernels are 3-4x slower than
    the fused program (bench/bench_augment.py). Small images, or `vectorized`,
    take the batched form (one XLA program per stage over the whole batch).

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
    scale, shift = _brightness_scale_shift(tf.convert_to_tensor(brightness, tf.float32),
                                           brightness_impl)
    arguments = (tf.convert_to_tensor(jitter, tf.bool), tf.convert_to_tensor(op_order, tf.int32),
                 scale, shift, tf.convert_to_tensor(contrast, tf.float32),
                 tf.convert_to_tensor(saturation, tf.float32),
                 tf.convert_to_tensor(hue, tf.float32), tf.convert_to_tensor(grayscale, tf.bool))
    if vectorized or _is_small(images):
        return _color_distortion_batched(images, *arguments)
    return tf.map_fn(lambda args: _distort_one(*args), (images, *arguments),
                     fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
                     parallel_iterations=_PARALLEL_IMAGES)


def color_jitter(images, op_order, brightness, contrast, saturation, hue,
                 brightness_impl="simclrv2"):
    """The four jitter ops in a per-image order, each followed by a clip to [0, 1].

    Args: see color_distortion.
    Returns:
      float32 [B, H, W, 3] in [0, 1].
    """
    everyone = tf.ones_like(tf.convert_to_tensor(brightness), tf.bool)
    return color_distortion(images, everyone, op_order, brightness, contrast, saturation,
                            hue, tf.logical_not(everyone), brightness_impl)


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


def _blur_one(image, taps, radius):
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


def _is_small(images, max_pixels=_SMALL_IMAGE_PIXELS):
    """Whether images [B, H, W, C] have a static H x W of at most max_pixels."""
    height, width = images.shape[1:3]
    return height is not None and width is not None and height * width <= max_pixels


def random_blur(images, blur, sigmas, radius, vectorized=False):
    """Blur only the images where `blur`, each with its sigma; then clip to [0, 1].

    The official batch_random_blur blurs every image and keeps it where the coin
    says so; blurring only the chosen ones gives the same result for half the work.
    Images above 64 x 64 are blurred one by one, each dropping the kernel's tail
    taps that weigh less than 1e-8 in all (small sigmas need far fewer than
    2R + 1 taps); small images in one depthwise convolution of the chosen ones.
    `vectorized` blurs every image in one depthwise convolution and keeps the
    chosen ones, as official: static shapes, for XLA.

    Args:
      images: float32 [B, H, W, C].
      blur: bool [B]; sigmas: float32 [B]; radius: python int; vectorized: bool.
    Returns:
      float32 [B, H, W, C] in [0, 1].
    """
    if vectorized:
        blurred = tf.where(_per_image(blur), gaussian_blur(images, sigmas, radius), images)
        return tf.clip_by_value(blurred, 0.0, 1.0)
    chosen = tf.where(blur)

    def blur_chosen():
        blurred = gaussian_blur(tf.gather_nd(images, chosen), tf.gather_nd(sigmas, chosen),
                                radius)
        return tf.tensor_scatter_nd_update(images, chosen, blurred)

    if not _is_small(images):  # image by image, each with its own number of taps
        return tf.map_fn(
            lambda args: tf.cond(args[1], lambda: _blur_one(args[0], args[2], radius),
                                 lambda: tf.clip_by_value(args[0], 0.0, 1.0)),
            (images, blur, gaussian_kernels(sigmas, radius)),
            fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32),
            parallel_iterations=_PARALLEL_IMAGES)
    # A convolution over zero channels is an error, so a batch without a blurred
    # image (e.g. a single image whose coin says no) skips it.
    images = tf.cond(tf.size(chosen) > 0, blur_chosen, lambda: images)
    return tf.clip_by_value(images, 0.0, 1.0)


def augment_per_image(images, boxes, flip, color, blur, size, radius,
                      brightness_impl="simclrv2"):
    """SimCLRAugment's pixel work image by image in one tf.map_fn: crop (if boxes),
    flip, color distortion (if color), clip, blur (if blur).

    The same ops as crop_and_resize, color_distortion and random_blur one after
    another, but each image goes through all of them while it is in cache (at 224
    px this saved a fifth of the time of the three batched calls).

    Args:
      images: uint8 or float32 [B, H, W, C], C in {1, 3}.
      boxes: int32 [B, 4] crop boxes, or None for images already size x size.
      flip: bool [B].
      color: None or the dict of color_distortion's per-image arguments.
      blur: None or {"blur": bool [B], "sigma": float32 [B]}.
      size: output side S; radius: python int blur radius.
    Returns:
      float32 [B, S, S, 3] in [0, 1].
    """
    images = tf.convert_to_tensor(images)
    uint8 = images.dtype == tf.uint8
    if not uint8:
        images = tf.cast(images, tf.float32)
    batch_size = tf.shape(images)[0]
    channels = images.shape[-1]
    arguments = {"image": images, "flip": tf.convert_to_tensor(flip, tf.bool)}
    if boxes is not None:
        arguments["box"] = tf.convert_to_tensor(boxes, tf.int32)
    if color is not None:
        scale, shift = _brightness_scale_shift(
            tf.convert_to_tensor(color["brightness"], tf.float32), brightness_impl)
        arguments["color"] = (
            tf.convert_to_tensor(color["jitter"], tf.bool),
            tf.convert_to_tensor(color["op_order"], tf.int32), scale, shift,
            tf.convert_to_tensor(color["contrast"], tf.float32),
            tf.convert_to_tensor(color["saturation"], tf.float32),
            tf.convert_to_tensor(color["hue"], tf.float32),
            tf.convert_to_tensor(color["grayscale"], tf.bool))
    if blur is not None:
        arguments["blur"] = tf.convert_to_tensor(blur["blur"], tf.bool)
        arguments["taps"] = tf.reshape(gaussian_kernels(blur["sigma"], radius),
                                       [batch_size, 2 * radius + 1])

    def one(args):
        image = args["image"]
        if "box" in args:
            offset_y, offset_x, height, width = tf.unstack(args["box"])
            crop = image[None, offset_y:offset_y + height, offset_x:offset_x + width]
            image = tf.raw_ops.ResizeBicubic(images=crop, size=[size, size],
                                             half_pixel_centers=True)[0]
        else:
            image = tf.cast(image, tf.float32)
        if uint8:
            image *= 1.0 / 255.0
        if channels == 1:
            image = tf.tile(image, [1, 1, 3])
        image = tf.cond(args["flip"], lambda: tf.reverse(image, [1]), lambda: image)
        if "color" in args:
            image = _distort_one(image, *args["color"])
        else:
            image = tf.clip_by_value(image, 0.0, 1.0)
        if "blur" in args:
            image = tf.cond(args["blur"], lambda: _blur_one(image, args["taps"], radius),
                            lambda: image)
        return image

    return tf.map_fn(one, arguments, fn_output_signature=tf.TensorSpec([size, size, 3],
                                                                       tf.float32),
                     parallel_iterations=_PARALLEL_IMAGES)
