"""The SimCLR augmentation as Keras 3 layers: paper-exact, batched and seedable.

`SimCLRAugment` is the policy of the official code (google-research/simclr,
tf2/data_util.py):

    random resized crop (p=1) -> horizontal flip (p=0.5)
    -> color distortion: jitter (p=0.8; brightness, contrast, saturation 0.8s and
       hue 0.2s in a random order per image, clip after each op), then
       grayscale (p=0.2) -> clip to [0, 1]
    -> Gaussian blur (p=0.5, sigma ~ U(0.1, 2.0) per image) -> clip to [0, 1]

applied to a whole batch [B, H, W, C] at once, each image with its own random
parameters; outputs are float32 [B, S, S, 3] in [0, 1]. Every layer exposes its
randomness: `sample_parameters(image_shape, seed)` returns the per-image
parameters that `call(images, seed=seed)` applies through
`apply_parameters(images, parameters)`.

Seeds. `seed` at call time is an int tensor of shape [2]; every draw is then a
stateless function of it (and of the batch size), so the same seed gives the same
views in eager mode, tf.function, tf.data and strategy.run. Without it the layer
takes the next seed of its own `keras.random.SeedGenerator(seed)`; under a
tf.distribute strategy pass explicit per-replica seeds instead (the generator's
state cannot be updated from a replica context).

Two ways to do the pixel work, same views (to float rounding):

* `vectorized=True`: every op on the whole batch with static shapes and no
  per-image loop (crop as batched matrix products, colour as one XLA program per
  jitter stage, blur as one depthwise convolution). It compiles with XLA: the
  form for TPUs and GPUs when augmenting inside the train step.
* `vectorized=False` (default), for CPUs: the crop uses TF's native bicubic
  kernel on each image's own box, and large views go through all their ops
  image by image while in cache (fused.py). Which path a size takes is decided
  in plan.py.

Modules: crop_boxes (box samplers), crop (crop/resize, flip, eval center crop),
color, blur, fused (the per-image CPU chain), plan (size thresholds), policy
(SimCLRAugment), base (shared checks and seed handling).
"""

from tf_simclr.augment.base import to_float_images
from tf_simclr.augment.blur import RandomGaussianBlur
from tf_simclr.augment.color import (
    COLOR_JITTER_IMPLS,
    MAX_COLOR_JITTER_STRENGTH,
    ColorDistortion,
)
from tf_simclr.augment.crop import (
    CROP_SAMPLERS,
    EVAL_CROP_PROPORTION,
    CenterCropResize,
    RandomFlip,
    RandomResizedCrop,
)
from tf_simclr.augment.policy import SimCLRAugment

__all__ = [
    "COLOR_JITTER_IMPLS",
    "CROP_SAMPLERS",
    "EVAL_CROP_PROPORTION",
    "MAX_COLOR_JITTER_STRENGTH",
    "CenterCropResize",
    "ColorDistortion",
    "RandomFlip",
    "RandomGaussianBlur",
    "RandomResizedCrop",
    "SimCLRAugment",
    "to_float_images",
]
