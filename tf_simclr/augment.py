"""The SimCLR augmentation as Keras 3 layers: paper-exact, batched and seedable.

`SimCLRAugment` is the policy of the official code (google-research/simclr,
tf2/data_util.py; see docs in tf_simclr/image_ops.py for the op-by-op mapping):

    random resized crop (p=1) -> horizontal flip (p=0.5)
    -> color distortion: jitter (p=0.8; brightness, contrast, saturation 0.8s and
       hue 0.2s in a random order per image, clip after each op), then
       grayscale (p=0.2) -> clip to [0, 1]
    -> Gaussian blur (p=0.5, sigma ~ U(0.1, 2.0) per image) -> clip to [0, 1]

applied to a whole batch at once, each image with its own random parameters.
Every layer also exposes its randomness: `sample_parameters(image_shape, seed)`
returns the per-image parameters that `call(images, seed=seed)` applies through
`apply_parameters(images, parameters)`.

Seeds. `seed` at call time is an int tensor of shape [2]; every draw is then a
stateless function of it (and of the batch size), so the same seed gives the same
views in eager mode, tf.function, tf.data and strategy.run. Without it the layer
takes the next seed of its own `keras.random.SeedGenerator(seed)`; under a
tf.distribute strategy pass explicit per-replica seeds instead (the generator's
state cannot be updated from a replica context).

Two ways to do the pixel work, same views (to float rounding):

* `vectorized=True`: every op on the whole batch with static shapes and no
  per-image loop. The crop is two batched matrix products with each image's
  bicubic weights (image_ops.crop_and_resize_vectorized), color runs as one XLA
  program per jitter stage that evaluates every op and keeps each image's own,
  the blur is one depthwise convolution of all images. It compiles with XLA, so
  it is the form for TPUs (and GPUs) when augmenting inside the train step.
* `vectorized=False` (default), fastest on a CPU, where a pass over a whole batch
  of 224 px images costs more memory traffic than the arithmetic: the crop uses
  TF's native bicubic kernel on each image's own box (a tf.map_fn), and views
  above 64 x 64 go through all their ops image by image while in cache
  (image_ops.augment_per_image): color as one small XLA program that evaluates
  only the image's own jitter op at each stage, blur with only the kernel taps
  that matter for its sigma. Small views (CIFAR) take the batched color and blur,
  and inputs of at most 32 x 32 the batched crop too: no per-image loop at all.

Random parameters are drawn for the whole batch at once either way. See
bench/bench_augment.py for the speed of both.
"""

import keras
import tensorflow as tf

from tf_simclr import image_ops

CROP_SAMPLERS = ("official", "paper")
COLOR_JITTER_IMPLS = image_ops.BRIGHTNESS_IMPLS
MAX_COLOR_JITTER_STRENGTH = 1.25  # contrast/saturation factors 1 - 0.8s must stay >= 0
EVAL_CROP_PROPORTION = 0.875
SMALL_IMAGE_SIZE = 32  # official: image_size <= 32 evaluates without crop or resize

# Each stage of SimCLRAugment draws from its own seed, stateless_fold_in(seed, stage).
_CROP_STAGE, _FLIP_STAGE, _COLOR_STAGE, _BLUR_STAGE = range(4)


def _check_images(images):
    """Validated images as a batch: (tensor [B, H, W, C], True if input was [H, W, C])."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank not in (3, 4):
        raise ValueError("Expected images of shape [batch, height, width, channels] or "
                         f"[height, width, channels]. Received: shape={images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError("Expected 1 or 3 channels (statically known). "
                         f"Received: shape={images.shape}")
    if not (images.dtype == tf.uint8 or images.dtype.is_floating):
        raise ValueError(f"Expected uint8 or float images. Received: dtype={images.dtype.name}")
    if images.dtype.is_floating and images.dtype != tf.float32:
        images = tf.cast(images, tf.float32)
    single = images.shape.rank == 3
    return (images[None] if single else images), single


def _to_rgb(images):
    """uint8/float [B, H, W, 1 or 3] -> float32 [B, H, W, 3] (gray tiled)."""
    images = image_ops.to_float_images(images)
    if images.shape[-1] == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    return images


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive int. Received: {name}={value!r}")


def _check_probability(name, value):
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected `{name}` in [0, 1]. Received: {name}={value!r}")


def _stage_seed(seed, stage):
    return tf.random.experimental.stateless_fold_in(seed, stage)


def _batch_size(image_shape):
    return tf.convert_to_tensor(image_shape, tf.int32)[0]


def _resize_crop(images, box, size):
    """tf.image.resize (bicubic) of one box shared by the batch: float32 [B, S, S, 3]."""
    offset_y, offset_x, height, width = tf.unstack(box)
    crop = images[:, offset_y:offset_y + height, offset_x:offset_x + width]
    return tf.image.resize(crop, [size, size], method="bicubic")


def _crop_and_resize(images, boxes, size, flip, vectorized):
    return _to_rgb(image_ops.crop_and_resize(images, boxes, size, flip, vectorized))


def _crop_flip_color(images, boxes, flip, color, size, color_impl, vectorized):
    """Crop + flip + color of SimCLRAugment on a batch; boxes None means "no crop"."""
    if boxes is None:
        images = _to_rgb(images)
        images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
    else:
        images = _crop_and_resize(images, boxes, size, flip, vectorized)
    if color is None:
        return tf.clip_by_value(images, 0.0, 1.0)
    # Unclipped: as official, the first color op sees the bicubic overshoot.
    return _distort_colors(images, color, color_impl, vectorized)


def _distort_colors(images, color, color_impl, vectorized):
    """Color distortion and the final clip to [0, 1]: float32 [B, H, W, 3]."""
    return image_ops.color_distortion(_to_rgb(images), brightness_impl=color_impl,
                                      vectorized=vectorized, **color)


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be a bool. Received: {name}={value!r}")


class _SeededLayer(keras.layers.Layer):
    """Seed handling shared by the random layers (see the module docstring)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        """Nothing to build: the only state is the seed generator made in __init__."""

    def _resolve_seed(self, seed):
        """The call's seed as an int tensor [2], or the generator's next one."""
        if seed is None:
            return self.seed_generator.next()
        seed = tf.convert_to_tensor(seed)
        if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] not in (2, None):
            raise ValueError("Expected `seed` to be an int tensor of shape [2]. "
                             f"Received: dtype={seed.dtype.name}, shape={seed.shape}")
        return seed

    def call(self, images, training=True, seed=None):
        images, single = _check_images(images)
        if training:
            seed = self._resolve_seed(seed)
            images = self._augment(images, seed, single)
        else:
            images = self._evaluate(images)
        return images[0] if single else images

    def _augment(self, images, seed, single):
        parameters = self.sample_parameters(tf.shape(images), seed)
        return self.apply_parameters(images, parameters)

    def _evaluate(self, images):
        return _to_rgb(images)

    def get_config(self):
        config = super().get_config()
        config.update(seed=self.seed)
        return config


class RandomResizedCrop(_SeededLayer):
    """Random crop of each image, resized bicubic to size x size.

    The crop boxes come from the official sampler (tf.image.sample_distorted_
    bounding_box with min_object_covered 0.1, aspect 3/4..4/3, area 0.08..1, 100
    attempts, else the whole image) or from the paper's (area uniform in
    0.08..1, log-aspect uniform, 100 attempts, else the whole image); see
    image_ops.sample_distorted_crop_boxes / sample_paper_crop_boxes. Each crop
    is resized as tf.image.resize(crop, [size, size], "bicubic"). With
    training=False the layer does the eval CenterCropResize.

    Args:
      size: output side S.
      sampler: "official" or "paper".
      vectorized: resize the whole batch with static shapes
        (image_ops.crop_and_resize_vectorized: XLA / TPU / GPU) instead of each
        crop with TF's native kernel (fastest on a CPU).
      seed: optional int for the layer's seed generator.

    Call: images uint8 or float [B, H, W, C] or [H, W, C], C in {1, 3};
    `seed` optional int [2]. Returns float32 [B, S, S, 3] (or [S, S, 3]).
    """

    def __init__(self, size, sampler="official", vectorized=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_positive_int("size", size)
        if sampler not in CROP_SAMPLERS:
            raise ValueError(
                f"Expected `sampler` in {CROP_SAMPLERS}. Received: sampler={sampler!r}")
        _check_bool("vectorized", vectorized)
        self.size = size
        self.sampler = sampler
        self.vectorized = vectorized
        self._center_crop = CenterCropResize(size)

    def sample_parameters(self, image_shape, seed):
        """{"boxes": int32 [B, 4] (offset_y, offset_x, height, width)} for images of
        shape `image_shape` [B, H, W, C] (all of one size)."""
        image_shape = tf.convert_to_tensor(image_shape, tf.int32)
        batch_size = image_shape[0]
        heights = tf.fill([batch_size], image_shape[1])
        widths = tf.fill([batch_size], image_shape[2])
        sample = (image_ops.sample_distorted_crop_boxes if self.sampler == "official"
                  else image_ops.sample_paper_crop_boxes)
        return {"boxes": sample(seed, heights, widths)}

    def apply_parameters(self, images, parameters):
        """Crops images [B, H, W, C] to parameters["boxes"] and resizes: [B, S, S, 3]."""
        return _crop_and_resize(images, parameters["boxes"], self.size, None, self.vectorized)

    def _evaluate(self, images):
        return self._center_crop(images)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.size, self.size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, sampler=self.sampler, vectorized=self.vectorized)
        return config


class RandomFlip(_SeededLayer):
    """Horizontal flip of each image with probability `probability` (official: 0.5).

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}); `seed`
    optional int [2]. Returns float32 [B, H, W, 3]; identity when training=False.
    """

    def __init__(self, probability=0.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_probability("probability", probability)
        self.probability = probability

    def sample_parameters(self, image_shape, seed):
        """{"flip": bool [B]}."""
        coins = tf.random.stateless_uniform([_batch_size(image_shape)], seed)
        return {"flip": coins < self.probability}

    def apply_parameters(self, images, parameters):
        images = _to_rgb(images)
        return tf.where(parameters["flip"][:, None, None, None], tf.reverse(images, [2]), images)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(probability=self.probability)
        return config


class ColorDistortion(_SeededLayer):
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
        instead of image by image above 64 x 64 (fastest on a CPU).
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
        _check_bool("vectorized", vectorized)
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
        batch_size = _batch_size(image_shape)
        jitter, brightness, contrast, saturation, hue, grayscale = tf.unstack(
            tf.random.stateless_uniform([6, batch_size], seed), axis=0)
        order_keys = tf.random.stateless_uniform([batch_size, image_ops.NUM_JITTER_OPS],
                                                 _stage_seed(seed, 1))
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
            return _to_rgb(images)
        return _distort_colors(images, parameters, self.impl, self.vectorized)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(strength=self.strength, impl=self.impl, vectorized=self.vectorized)
        return config


class RandomGaussianBlur(_SeededLayer):
    """Gaussian blur of each image with probability 0.5 and its own sigma.

    sigma ~ U(0.1, 2.0) per image (the official code draws one sigma per batch);
    the kernel has 2 * int(kernel_size / 2) + 1 taps with kernel_size = height // 10
    unless given (official: 23 taps at 224, 3 at 32), zero ('SAME') padding as
    official; the result is clipped to [0, 1].

    Args:
      kernel_size: optional int; None takes height // 10 of the input.
      probability: of blurring an image.
      sigma_range: (low, high) of the uniform sigma.
      vectorized: blur every image in one batched convolution and keep the chosen
        ones (static shapes) instead of only the chosen ones, one by one above
        64 x 64 (fastest on a CPU).
      seed: optional int for the layer's seed generator.

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}); `seed`
    optional int [2]. Returns float32 [B, H, W, 3] (training=False: unchanged).
    """

    def __init__(self, kernel_size=None, probability=0.5, sigma_range=(0.1, 2.0),
                 vectorized=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if kernel_size is not None:
            _check_positive_int("kernel_size", kernel_size)
        _check_probability("probability", probability)
        if len(sigma_range) != 2 or not 0.0 < sigma_range[0] <= sigma_range[1]:
            raise ValueError("Expected `sigma_range` = (low, high) with 0 < low <= high. "
                             f"Received: sigma_range={sigma_range!r}")
        _check_bool("vectorized", vectorized)
        self.kernel_size = kernel_size
        self.probability = probability
        self.sigma_range = tuple(sigma_range)
        self.vectorized = vectorized

    def sample_parameters(self, image_shape, seed):
        """{"blur": bool [B], "sigma": float32 [B]}."""
        blur, sigma = tf.unstack(
            tf.random.stateless_uniform([2, _batch_size(image_shape)], seed), axis=0)
        low, high = self.sigma_range
        return {"blur": blur < self.probability, "sigma": low + sigma * (high - low)}

    def radius(self, height):
        """Blur radius for images of static height `height`."""
        kernel_size = self.kernel_size
        if kernel_size is None:
            if height is None:
                raise ValueError("RandomGaussianBlur(kernel_size=None) needs a static image "
                                 "height (kernel_size = height // 10). Received: height=None")
            kernel_size = height // 10
        return image_ops.blur_radius(kernel_size)

    def apply_parameters(self, images, parameters):
        images = _to_rgb(images)
        return image_ops.random_blur(images, parameters["blur"], parameters["sigma"],
                                     self.radius(images.shape[1]), self.vectorized)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, probability=self.probability,
                      sigma_range=self.sigma_range, vectorized=self.vectorized)
        return config


class CenterCropResize(keras.layers.Layer):
    """Official eval preprocessing: central crop of 0.875, bicubic resize to size.

    The box keeps 0.875 of the less-cropped side, has a square aspect, is
    rint-rounded and sits at ((dim - crop) + 1) // 2 (image_ops.center_crop_boxes);
    then tf.image.resize(bicubic) to size x size and a clip to [0, 1]. For
    size <= 32 (CIFAR) the official code neither crops nor resizes: images must
    already be size x size, else a ValueError (or, for shapes known only at run
    time, an InvalidArgumentError) is raised rather than resizing silently.

    Args:
      size: output side S.
      crop_proportion: of the less-cropped side.

    Call: images [B, H, W, C] or [H, W, C] (uint8 or float, C in {1, 3}).
    Returns float32 [B, S, S, 3] (or [S, S, 3]).
    """

    def __init__(self, size, crop_proportion=EVAL_CROP_PROPORTION, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("size", size)
        if not 0.0 < crop_proportion <= 1.0:
            raise ValueError("Expected `crop_proportion` in (0, 1]. "
                             f"Received: crop_proportion={crop_proportion!r}")
        self.size = size
        self.crop_proportion = crop_proportion

    def crop_box(self, height, width):
        """int32 [4] (offset_y, offset_x, crop_height, crop_width) for one image size."""
        return image_ops.center_crop_boxes([height], [width], self.crop_proportion)[0]

    def call(self, images):
        images, single = _check_images(images)
        rgb = _to_rgb(images)
        if self.size <= SMALL_IMAGE_SIZE:
            static_size = tuple(images.shape[1:3])
            if None not in static_size and static_size != (self.size, self.size):
                raise ValueError(f"CenterCropResize({self.size}) does no crop or resize at "
                                 f"size <= {SMALL_IMAGE_SIZE} (as official); expected "
                                 f"{self.size}x{self.size} images. Received: shape={images.shape}")
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(images)[1:3], [self.size, self.size],
                    message=f"CenterCropResize({self.size}) expects {self.size}x{self.size} "
                            "images (no crop or resize at size <= 32)")]):
                output = tf.identity(rgb)
        else:
            box = self.crop_box(tf.shape(images)[1], tf.shape(images)[2])
            output = _resize_crop(rgb, box, self.size)
        output = tf.clip_by_value(output, 0.0, 1.0)
        return output[0] if single else output

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.size, self.size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, crop_proportion=self.crop_proportion)
        return config


class SimCLRAugment(_SeededLayer):
    """The SimCLR augmentation of one view (see the module docstring).

    Args:
      image_size: output side S.
      color_jitter_strength: s in [0, 1.25]; 0 turns color distortion off.
      use_blur: whether to blur (p=0.5 per image).
      color_jitter_impl: "simclrv2" (multiplicative brightness) or "simclrv1" (additive).
      crop_sampler: "official" (tf.image.sample_distorted_bounding_box) or "paper".
      crop: False when inputs are already S x S: no random resized crop.
      vectorized: every op on the whole batch with static shapes, no per-image
        loop: for XLA, TPUs and GPUs (see the module docstring). False (default)
        is the fastest on a CPU.
      seed: optional int for the layer's seed generator.

    Call: images uint8 (scaled by 1/255) or float in [0, 1], [B, H, W, C] or
    [H, W, C], C in {1, 3}; `training=False` gives the eval preprocessing
    (CenterCropResize); `seed` optional int [2]. Returns float32 [B, S, S, 3]
    (or [S, S, 3]) in [0, 1].
    """

    def __init__(self, image_size, color_jitter_strength=1.0, use_blur=True,
                 color_jitter_impl="simclrv2", crop_sampler="official", crop=True,
                 vectorized=False, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_positive_int("image_size", image_size)
        _check_bool("vectorized", vectorized)
        self.image_size = image_size
        self.color_jitter_strength = color_jitter_strength
        self.use_blur = use_blur
        self.color_jitter_impl = color_jitter_impl
        self.crop_sampler = crop_sampler
        self.crop = crop
        self.vectorized = vectorized
        self.random_crop = RandomResizedCrop(image_size, sampler=crop_sampler,
                                             vectorized=vectorized)
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
            image_shape, _stage_seed(seed, _FLIP_STAGE))}
        if self.crop:
            parameters["crop"] = self.random_crop.sample_parameters(
                image_shape, _stage_seed(seed, _CROP_STAGE))
        if self.color.enabled:
            parameters["color"] = self.color.sample_parameters(
                image_shape, _stage_seed(seed, _COLOR_STAGE))
        if self.use_blur:
            parameters["blur"] = self.blur.sample_parameters(
                image_shape, _stage_seed(seed, _BLUR_STAGE))
        return parameters

    def apply_parameters(self, images, parameters):
        """Applies sample_parameters' draws to images [B, H, W, C]: [B, S, S, 3]."""
        self._check_size(images)
        boxes = parameters["crop"]["boxes"] if self.crop else None
        if not self.vectorized and self.image_size ** 2 > image_ops._SMALL_IMAGE_PIXELS:
            return image_ops.augment_per_image(
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
                      crop_sampler=self.crop_sampler, crop=self.crop,
                      vectorized=self.vectorized)
        return config
