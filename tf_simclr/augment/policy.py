"""SimCLRAugment: the whole SimCLR augmentation of one view (see tf_simclr.augment).

Images uint8 or float [B, H, W, C] (or [H, W, C]), C in {1, 3} -> float32
[B, S, S, 3] in [0, 1].
"""

import keras
import tensorflow as tf

from tf_simclr.augment import base, fused, plan
from tf_simclr.augment.blur import RandomGaussianBlur
from tf_simclr.augment.color import ColorDistortion, distort_colors
from tf_simclr.augment.crop import (
    DEFAULT_CROP_MIN_AREA,
    CenterCropResize,
    RandomFlip,
    RandomResizedCrop,
    crop_to_rgb,
    flip_rgb,
)

# Each stage of SimCLRAugment draws from its own seed, stateless_fold_in(seed, stage).
_CROP_STAGE, _FLIP_STAGE, _COLOR_STAGE, _BLUR_STAGE = range(4)


def _crop_flip_color(images, boxes, flip, color, size, color_impl, vectorized):
    """Crop + flip + color of SimCLRAugment on a batch; boxes None means "no crop"."""
    if boxes is None:
        images = flip_rgb(images, flip)
    else:
        images = crop_to_rgb(images, boxes, size, flip, vectorized)
    if color is None:
        return tf.clip_by_value(images, 0.0, 1.0)
    # Unclipped: as official, the first color op sees the bicubic overshoot.
    return distort_colors(images, color, color_impl, vectorized)


@keras.saving.register_keras_serializable(package="tf_simclr")
class SimCLRAugment(base.SeededLayer):
    """The SimCLR augmentation of one view (see tf_simclr.augment).

    Args:
      image_size: output side S.
      color_jitter_strength: s in [0, 1.25]; 0 turns color distortion off.
      use_blur: whether to blur (p=0.5 per image).
      color_jitter_impl: "simclrv2" (multiplicative brightness) or "simclrv1" (additive).
      crop_sampler: "official" (tf.image.sample_distorted_bounding_box) or "paper".
      crop_min_area: the smallest crop as a fraction of the image area.
      crop: False when inputs are already S x S: no random resized crop.
      vectorized: every op on the whole batch with static shapes, no per-image
        loop: for XLA, TPUs and GPUs (see tf_simclr.augment). False (default)
        is the fastest on a CPU.
      seed: optional int for the layer's seed generator.

    Call: images uint8 (scaled by 1/255) or float in [0, 1], [B, H, W, C] or
    [H, W, C], C in {1, 3}; `training=False` gives the eval preprocessing
    (CenterCropResize); `seed` optional int [2]. Returns float32 [B, S, S, 3]
    (or [S, S, 3]) in [0, 1].
    """

    def __init__(self, image_size, color_jitter_strength=1.0, use_blur=True,
                 color_jitter_impl="simclrv2", crop_sampler="official",
                 crop_min_area=DEFAULT_CROP_MIN_AREA, crop=True, vectorized=False, seed=None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        base.check_positive_int("image_size", image_size)
        base.check_bool("vectorized", vectorized)
        self.image_size = image_size
        self.color_jitter_strength = color_jitter_strength
        self.use_blur = use_blur
        self.color_jitter_impl = color_jitter_impl
        self.crop_sampler = crop_sampler
        self.crop_min_area = crop_min_area
        self.crop = crop
        self.vectorized = vectorized
        self.random_crop = RandomResizedCrop(image_size, sampler=crop_sampler,
                                             min_area=crop_min_area, vectorized=vectorized)
        self.flip = RandomFlip()
        self.color = ColorDistortion(color_jitter_strength, impl=color_jitter_impl,
                                     vectorized=vectorized)
        self.blur = RandomGaussianBlur(kernel_size=max(1, image_size // 10),
                                       vectorized=vectorized)
        self.center_crop = CenterCropResize(image_size)

    def sample_parameters(self, image_shape, seed):
        """{"crop", "flip", "color", "blur"}: each sub-layer's sample_parameters for
        its stage seed stateless_fold_in(seed, stage); "crop" is absent when
        crop=False, "color" when the strength is 0, "blur" when use_blur=False."""
        parameters = {"flip": self.flip.sample_parameters(
            image_shape, base.stage_seed(seed, _FLIP_STAGE))}
        if self.crop:
            parameters["crop"] = self.random_crop.sample_parameters(
                image_shape, base.stage_seed(seed, _CROP_STAGE))
        if self.color.enabled:
            parameters["color"] = self.color.sample_parameters(
                image_shape, base.stage_seed(seed, _COLOR_STAGE))
        if self.use_blur:
            parameters["blur"] = self.blur.sample_parameters(
                image_shape, base.stage_seed(seed, _BLUR_STAGE))
        return parameters

    def apply_parameters(self, images, parameters):
        """Applies sample_parameters' draws to images [B, H, W, C]: [B, S, S, 3]."""
        self._check_size(images)
        boxes = parameters["crop"]["boxes"] if self.crop else None
        if plan.runs_fused(self.image_size, self.vectorized):
            return fused.augment_per_image(
                images, boxes, parameters["flip"]["flip"], parameters.get("color"),
                parameters.get("blur") if self.use_blur else None, self.image_size,
                self.blur.radius(self.image_size), self.color_jitter_impl)
        images = _crop_flip_color(images, boxes, parameters["flip"]["flip"],
                                  parameters.get("color"), self.image_size,
                                  self.color_jitter_impl, self.vectorized)
        return self._blur(images, parameters)

    def _blur(self, images, parameters):
        if not self.use_blur:
            return images
        return self.blur.apply_parameters(images, parameters["blur"])

    def _check_size(self, images):
        if self.crop:
            return
        static_size = tuple(images.shape[1:3])
        if None not in static_size and static_size != (self.image_size, self.image_size):
            raise ValueError(f"SimCLRAugment(crop=False) expects {self.image_size}x"
                             f"{self.image_size} images. Received: shape={images.shape}")

    def _evaluate(self, images):
        return self.center_crop(images)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.image_size, self.image_size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(image_size=self.image_size,
                      color_jitter_strength=self.color_jitter_strength,
                      use_blur=self.use_blur, color_jitter_impl=self.color_jitter_impl,
                      crop_sampler=self.crop_sampler, crop_min_area=self.crop_min_area,
                      crop=self.crop,
                      vectorized=self.vectorized)
        return config
