"""Crop boxes of the random resized crop and of the eval center crop.

Pure functions of an explicit stateless seed (int tensor [2]) and the image sizes
(int32 [B]); every box is an int32 [B, 4] row (offset_y, offset_x, height, width)
in pixels. `sample_distorted_crop_boxes` has the distribution of
tf.image.sample_distorted_bounding_box (what the official code calls per image),
`sample_paper_crop_boxes` the paper's (torchvision's), `center_crop_boxes` the
official eval crop (data_util._compute_crop_shape + center_crop).
"""

import math

import tensorflow as tf


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
