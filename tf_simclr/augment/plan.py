"""Which code path the augmentation takes, as a function of static image sizes.

Every size threshold that picks a path lives here, with a predicate that uses it;
the op modules call the predicates. Sizes are static python ints (None: unknown).
"""

# Eval preprocessing (official): at image_size <= 32 (CIFAR) evaluation neither
# crops nor resizes; above, a central 0.875 crop resized to image_size.
EVAL_NO_CROP_MAX_SIDE = 32
# Up to this many pixels per image, colour distortion and blur run on the whole
# batch at once (per image, launching a program costs more than the pixel work);
# above, SimCLRAugment runs its whole chain image by image (fused.py) on a CPU.
BATCHED_PIXELS_MAX = 64 * 64
# Inputs and outputs up to this many pixels per image are cropped in the matrix
# form (crop.crop_and_resize_vectorized): its dense weights are still cheap there,
# cheaper than a per-image loop; above, the weights grow with H x S and W x S.
MATRIX_CROP_PIXELS_MAX = 32 * 32
# Images processed concurrently by the per-image loops (tf.map_fn).
PARALLEL_IMAGES = 8


def eval_crops(image_size):
    """Whether the eval preprocessing crops and resizes at this output side."""
    return image_size > EVAL_NO_CROP_MAX_SIDE


def _static_pixels(images):
    """H * W of images [B, H, W, C] if both are static, else None."""
    height, width = images.shape[1:3]
    if height is None or width is None:
        return None
    return height * width


def runs_batched(images):
    """Whether colour and blur (vectorized=False) process images [B, H, W, C] as
    one batch rather than image by image: static H x W of at most BATCHED_PIXELS_MAX."""
    pixels = _static_pixels(images)
    return pixels is not None and pixels <= BATCHED_PIXELS_MAX


def runs_fused(image_size, vectorized):
    """Whether SimCLRAugment runs its whole chain per image (fused.augment_per_image)."""
    return not vectorized and image_size * image_size > BATCHED_PIXELS_MAX


def crops_in_matrix_form(images, size, vectorized):
    """Whether crop.crop_and_resize takes the matrix form for images [B, H, W, C]
    resized to size x size: when `vectorized`, or both sides small."""
    pixels = _static_pixels(images)
    return vectorized or (pixels is not None and pixels <= MATRIX_CROP_PIXELS_MAX
                          and size * size <= MATRIX_CROP_PIXELS_MAX)
