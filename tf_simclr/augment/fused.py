"""SimCLRAugment's pixel work image by image in one loop, for CPUs.

`augment_per_image` runs crop (crop.crop_resize_one), flip, colour
(color.distort_one), clip and blur (blur.blur_one) on each image while it is in
cache, instead of three batched passes over the whole batch. Images uint8 or
float32 [B, H, W, C], C in {1, 3} -> float32 [B, S, S, 3] in [0, 1].
"""

import tensorflow as tf

from tf_simclr.augment import blur as blur_lib
from tf_simclr.augment import color as color_lib
from tf_simclr.augment import crop as crop_lib
from tf_simclr.augment import plan


def augment_per_image(images, boxes, flip, color, blur, size, radius,
                      brightness_impl="simclrv2"):
    """SimCLRAugment's pixel work image by image in one tf.map_fn: crop (if boxes),
    flip, color distortion (if color), clip, blur (if blur).

    The same ops as crop.crop_and_resize, color.color_distortion and
    blur.random_blur one after another, but each image goes through all of them
    while it is in cache (bench/bench_augment.py compares the two).

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
        arguments["color"] = color_lib.color_arguments(**color, brightness_impl=brightness_impl)
    if blur is not None:
        arguments["blur"] = tf.convert_to_tensor(blur["blur"], tf.bool)
        arguments["taps"] = tf.reshape(blur_lib.gaussian_kernels(blur["sigma"], radius),
                                       [batch_size, 2 * radius + 1])

    def one(args):
        image = args["image"]
        if "box" in args:
            image = crop_lib.crop_resize_one(image, args["box"], size)
        else:
            image = tf.cast(image, tf.float32)
        if uint8:
            image *= 1.0 / 255.0
        if channels == 1:
            image = tf.tile(image, [1, 1, 3])
        image = tf.cond(args["flip"], lambda: tf.reverse(image, [1]), lambda: image)
        if "color" in args:
            image = color_lib.distort_one(image, *args["color"])
        else:
            image = tf.clip_by_value(image, 0.0, 1.0)
        if "blur" in args:
            image = tf.cond(args["blur"], lambda: blur_lib.blur_one(image, args["taps"], radius),
                            lambda: image)
        return image

    return tf.map_fn(one, arguments, fn_output_signature=tf.TensorSpec([size, size, 3],
                                                                       tf.float32),
                     parallel_iterations=plan.PARALLEL_IMAGES)
