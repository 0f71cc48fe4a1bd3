"""Tests of the random resized crop, the flip and the eval center crop
(tf_simclr.augment.crop_boxes, tf_simclr.augment.crop).

The crop sampler is compared with tf.image.stateless_sample_distorted_bounding_box
itself (Kolmogorov-Smirnov distances below the alpha = 1e-4 critical value); the
resize with tf.image.resize and PIL on explicit crops.
"""

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from PIL import Image

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
    CenterCropResize,
    RandomFlip,
    RandomResizedCrop,
    SimCLRAugment,
    crop,
    crop_boxes,
)

# --------------------------------------------------------------------------------------
# Random resized crop: the box sampler.


def tf_op_boxes(height, width, n, max_attempts=100, area_range=(0.08, 1.0)):
    """n boxes from the op the official code calls, with the whole image as bbox."""

    @tf.function
    def draw(seeds):
        def one(s):
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                [height, width, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=s,
                min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=area_range, max_attempts=max_attempts,
                use_image_if_no_bounding_boxes=True)
            return tf.stack([begin[0], begin[1], size[0], size[1]])
        return tf.map_fn(one, seeds, fn_output_signature=tf.int32)

    seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(99, tf.int64))],
                     axis=1)
    return draw(seeds).numpy()


def our_boxes(sampler, height, width, n, rng_seed=1, **kwargs):
    sample = {"official": crop_boxes.sample_distorted_crop_boxes,
              "paper": crop_boxes.sample_paper_crop_boxes}[sampler]
    return sample(seed(rng_seed), tf.fill([n], height), tf.fill([n], width), **kwargs).numpy()


def box_stats(boxes, height, width):
    area = boxes[:, 2] * boxes[:, 3] / (height * width)
    aspect = boxes[:, 3] / boxes[:, 2]
    return area, aspect


@pytest.mark.parametrize("height,width", [(48, 64), (224, 224)])
def test_official_crop_sampler_matches_tf_sample_distorted_bounding_box(height, width):
    ours = our_boxes("official", height, width, 4000)
    theirs = tf_op_boxes(height, width, 1500)
    ours_area, ours_aspect = box_stats(ours, height, width)
    their_area, their_aspect = box_stats(theirs, height, width)
    critical = ks_critical(len(ours), len(theirs))
    assert scipy.stats.ks_2samp(ours_area, their_area).statistic < critical
    assert scipy.stats.ks_2samp(ours_aspect, their_aspect).statistic < critical
    # Corner: the op draws it uniform in [0, H - h) (never the last offset).
    movable = ours[:, 2] < height
    ours_y = ours[movable, 0] / (height - ours[movable, 2])
    movable_t = theirs[:, 2] < height
    their_y = theirs[movable_t, 0] / (height - theirs[movable_t, 2])
    assert scipy.stats.ks_2samp(ours_y, their_y).statistic < ks_critical(len(ours_y),
                                                                          len(their_y))
    # Hard constraints of the op: in the image, >= 10% of it (min_object_covered),
    # aspect within the range up to the rounding of the width.
    assert np.all(ours[:, :2] >= 0)
    assert np.all(ours[:, 0] + ours[:, 2] <= height)
    assert np.all(ours[:, 1] + ours[:, 3] <= width)
    assert np.all(ours[movable, 0] + ours[movable, 2] < height)
    assert ours_area.min() >= 0.1 - 1e-6
    assert ours_area.max() <= 1.0
    slack = 0.5 / ours[:, 2]
    assert np.all(ours_aspect >= 3 / 4 - slack - 1e-6)
    assert np.all(ours_aspect <= 4 / 3 + slack + 1e-6)


def test_official_crop_sampler_is_not_uniform_in_area():
    """TF's sampler draws the integer height uniformly, not the area: its area
    fractions start at 0.1 (min_object_covered) and are far from U(0.08, 1)."""
    area, aspect = box_stats(our_boxes("official", 224, 224, 4000), 224, 224)
    assert np.mean(area < 0.1) == 0.0
    assert uniform_ks(area, 0.08, 1.0) > 3 * ks_critical(len(area))
    # ...but the aspect ratio is uniform in (3/4, 4/3), as the op draws it.
    assert uniform_ks(aspect, 3 / 4, 4 / 3) < ks_critical(len(aspect)) + 0.01


def paper_sampler_reference(height, width, n, rng):
    """The paper's (torchvision's) RandomResizedCrop sampler, one box at a time."""
    boxes = []
    for _ in range(n):
        for _ in range(100):
            area = height * width * rng.uniform(0.08, 1.0)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = int(round(math.sqrt(area * aspect)))
            h = int(round(math.sqrt(area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                boxes.append((rng.randint(0, height - h + 1), rng.randint(0, width - w + 1), h, w))
                break
        else:
            boxes.append((0, 0, height, width))
    return np.array(boxes)


def test_paper_crop_sampler_area_uniform_and_log_aspect_uniform():
    size = 400
    ours = our_boxes("paper", size, size, 4000)
    area, aspect = box_stats(ours, size, size)
    log_aspect = np.log(aspect)
    # Below half the image every candidate fits, so there the accepted boxes keep
    # the candidate law: area ~ U(0.08, 1), log aspect ~ U(log 3/4, log 4/3).
    small = area < 0.5
    assert uniform_ks(area[small], 0.08, 0.5) < ks_critical(small.sum()) + 0.01
    assert uniform_ks(log_aspect[small], math.log(3 / 4), math.log(4 / 3)) < (
        ks_critical(small.sum()) + 0.02)
    # Over the whole range, the same law as the one-at-a-time reference sampler.
    reference = paper_sampler_reference(size, size, 3000, np.random.RandomState(0))
    ref_area, ref_aspect = box_stats(reference, size, size)
    critical = ks_critical(len(area), len(ref_area))
    assert scipy.stats.ks_2samp(area, ref_area).statistic < critical
    assert scipy.stats.ks_2samp(aspect, ref_aspect).statistic < critical
    assert np.all(ours[:, 0] + ours[:, 2] <= size) and np.all(ours[:, 1] + ours[:, 3] <= size)


@pytest.mark.parametrize("sampler", ["official", "paper"])
def test_crop_min_area_bounds_the_layers_crops(sampler):
    """RandomResizedCrop(min_area=a): every crop covers at least a of the 28 x 28
    image (up to the rounding of its sides), and the law above a is the sampler's
    with area_range (a, 1): the official one against TF's op itself."""
    size, min_area = 28, 0.35
    layer = RandomResizedCrop(size, sampler=sampler, min_area=min_area)
    boxes = layer.sample_parameters([3000, size, size, 1], seed(60))["boxes"].numpy()
    area, _ = box_stats(boxes, size, size)
    # lrint of each side moves the area by at most about one row and column.
    assert area.min() >= min_area - 2 / size
    assert np.mean(area < 0.5) > 0.1  # the small end is reached, not just the whole image
    if sampler == "official":
        theirs, _ = box_stats(tf_op_boxes(size, size, 1500, area_range=(min_area, 1.0)),
                              size, size)
        assert scipy.stats.ks_2samp(area, theirs).statistic < ks_critical(len(area),
                                                                          len(theirs))
    with pytest.raises(ValueError, match="min_area"):
        RandomResizedCrop(size, min_area=0.0)


@pytest.mark.parametrize("sampler", ["official", "paper"])
def test_crop_falls_back_to_the_whole_image_when_no_attempt_fits(sampler):
    # 4 x 200: a crop with aspect in (3/4, 4/3) is at most 4 x 5 px, far below
    # 8% (or 10%) of the 800 px, so every one of the 100 attempts fails.
    boxes = our_boxes(sampler, 4, 200, 50)
    np.testing.assert_array_equal(boxes, np.tile([0, 0, 4, 200], (50, 1)))
    if sampler == "official":
        np.testing.assert_array_equal(tf_op_boxes(4, 200, 20), np.tile([0, 0, 4, 200], (20, 1)))
    layer = RandomResizedCrop(8, sampler=sampler)
    np.testing.assert_array_equal(
        layer.sample_parameters([3, 4, 200, 3], seed(5))["boxes"].numpy(),
        np.tile([0, 0, 4, 200], (3, 1)))


def test_official_crop_fallback_rate_with_one_attempt_matches_tf_op():
    """With max_attempts=1 a candidate is rejected now and then; the fallback
    (whole image) rate must be the op's."""
    # A tall image: candidates with aspect near 4/3 cannot reach 30% of it.
    height, width = 40, 12
    ours = our_boxes("official", height, width, 6000, max_attempts=1, area_range=(0.3, 1.0))
    theirs = tf_op_boxes(height, width, 2000, max_attempts=1, area_range=(0.3, 1.0))
    whole = np.array([0, 0, height, width])
    ours_rate = np.mean(np.all(ours == whole, axis=1))
    their_rate = np.mean(np.all(theirs == whole, axis=1))
    assert 0.05 < their_rate < 0.95  # the comparison means something
    pooled = (ours_rate * 6000 + their_rate * 2000) / 8000
    sigma = math.sqrt(pooled * (1 - pooled) * (1 / 6000 + 1 / 2000))
    assert abs(ours_rate - their_rate) <= 4 * sigma


# --------------------------------------------------------------------------------------
# Random resized crop: the resize, and the flip.

FIXED_BOXES = np.array([[0, 0, 20, 24],   # whole image (downscale)
                        [3, 5, 7, 9],     # small, upscale
                        [19, 23, 1, 1],   # one pixel in the corner
                        [2, 0, 18, 11]], np.int32)


def test_crop_resize_equals_tf_image_resize_of_each_explicit_crop():
    images = random_images((4, 20, 24, 3))
    layer = RandomResizedCrop(16)
    out = layer.apply_parameters(images, {"boxes": tf.constant(FIXED_BOXES)}).numpy()
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32
    for image, box, view in zip(images, FIXED_BOXES, out):
        y, x, h, w = box
        expected = tf.image.resize(image[None, y:y + h, x:x + w], [16, 16], "bicubic")[0]
        np.testing.assert_allclose(view, expected.numpy(), atol=2e-5)


def test_crop_resize_upscale_equals_pil_bicubic():
    """PIL's bicubic (a = -0.5, half-pixel centers) equals TF's when upscaling."""
    images = random_images((4, 20, 24, 3), rng_seed=3)
    out = RandomResizedCrop(16).apply_parameters(images, {"boxes": tf.constant(FIXED_BOXES)})
    y, x, h, w = FIXED_BOXES[1]
    for channel in range(3):
        crop = Image.fromarray(images[1, y:y + h, x:x + w, channel], mode="F")
        expected = np.asarray(crop.resize((16, 16), Image.BICUBIC))
        np.testing.assert_allclose(out[1, :, :, channel].numpy(), expected, atol=1e-4)


def test_crop_resize_with_folded_flip_mirrors_the_view():
    images = tf.constant(random_images((4, 20, 24, 3)))
    boxes = tf.constant(FIXED_BOXES)
    flip = tf.constant([True, False, True, True])
    plain = crop.crop_and_resize(images, boxes, 16).numpy()
    flipped = crop.crop_and_resize(images, boxes, 16, flip).numpy()
    for i in range(4):
        expected = plain[i, :, ::-1] if flip[i] else plain[i]
        np.testing.assert_allclose(flipped[i], expected, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_vectorized_crop_resize_equals_tf_image_resize_of_each_explicit_crop(dtype):
    """The matrix form reproduces ResizeBicubic's weights (table, borders, flip)."""
    images = uint8_images((4, 20, 24, 3), rng_seed=8)
    if dtype == "float32":
        images = images / np.float32(255.0)
    boxes = tf.constant(FIXED_BOXES)
    flip = tf.constant([False, True, False, True])
    eager = crop.crop_and_resize_vectorized(images, boxes, 16, flip).numpy()
    compiled = tf.function(crop.crop_and_resize_vectorized, jit_compile=True)(
        images, boxes, 16, flip).numpy()  # XLA: every shape static
    assert eager.shape == (4, 16, 16, 3) and eager.dtype == np.float32
    floats = images.astype(np.float32) / (255.0 if dtype == "uint8" else 1.0)
    for i, (y, x, h, w) in enumerate(FIXED_BOXES):
        expected = tf.image.resize(floats[i, y:y + h, x:x + w][None], [16, 16], "bicubic")[0]
        expected = expected.numpy()[:, ::-1] if flip[i] else expected.numpy()
        np.testing.assert_allclose(eager[i], expected, atol=2e-6)
        np.testing.assert_allclose(compiled[i], expected, atol=2e-6)


def test_vectorized_crop_resize_on_sampled_boxes_downscale_and_upscale():
    images = random_images((64, 40, 40, 3), rng_seed=9)
    boxes = crop_boxes.sample_distorted_crop_boxes(seed(10), tf.fill([64], 40), tf.fill([64], 40))
    for size in (24, 56):  # crops of 12..40 px: both directions
        np.testing.assert_allclose(
            crop.crop_and_resize_vectorized(images, boxes, size).numpy(),
            crop.crop_and_resize(images, boxes, size).numpy(), atol=3e-6)


def test_flip_rate_and_effect():
    layer = RandomFlip()
    flips = layer.sample_parameters([8000, 4, 4, 3], seed(3))["flip"].numpy()
    within_binomial(flips.sum(), flips.size, 0.5)
    images = random_images((6, 5, 7, 3))
    flip = np.array([True, False, True, False, False, True])
    out = layer.apply_parameters(images, {"flip": tf.constant(flip)}).numpy()
    for i in range(6):
        np.testing.assert_array_equal(out[i], images[i, :, ::-1] if flip[i] else images[i])


# --------------------------------------------------------------------------------------
# Eval preprocessing.


def np_center_box(height, width, proportion=0.875):
    """data_util._compute_crop_shape + center_crop offsets for a square output."""
    if 1.0 > width / height:
        crop_h = crop_w = int(np.rint(proportion * width))
    else:
        crop_h = crop_w = int(np.rint(proportion * height))
    return ((height - crop_h) + 1) // 2, ((width - crop_w) + 1) // 2, crop_h, crop_w


@pytest.mark.parametrize("height,width", [(40, 30), (30, 40), (48, 48)])
def test_center_crop_0875_then_bicubic_resize(height, width):
    images = random_images((2, height, width, 3), rng_seed=height)
    y, x, h, w = np_center_box(height, width)
    assert (h, w) == ((26, 26) if min(height, width) == 30 else (42, 42))
    out = CenterCropResize(36)(images).numpy()
    expected = np.clip(tf.image.resize(images[:, y:y + h, x:x + w], [36, 36], "bicubic"), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(SimCLRAugment(36)(images, training=False).numpy(), expected,
                               atol=1e-6)


def test_no_crop_or_resize_at_32_px_and_below():
    images = uint8_images((3, 32, 32, 3))
    np.testing.assert_allclose(CenterCropResize(32)(images).numpy(), images / 255.0, atol=1e-7)
    np.testing.assert_allclose(SimCLRAugment(32)(images, training=False).numpy(),
                               images / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match=r"\(3, 40, 40, 3\)"):
        CenterCropResize(32)(uint8_images((3, 40, 40, 3)))


def test_crop_layers_round_trip_through_their_config():
    images = uint8_images((4, 40, 50, 3), rng_seed=13)
    assert_round_trips(RandomResizedCrop(16, sampler="paper", min_area=0.3, vectorized=True,
                                         seed=3),
                       images, seed(50))
    assert_round_trips(RandomFlip(probability=0.3, seed=4), images, seed(51))
    assert_round_trips(CenterCropResize(36, crop_proportion=0.75), images)
