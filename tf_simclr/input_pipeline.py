"""Batches for training and evaluation, sharded per replica and resumable by step.

Training stream. Per input pipeline, epoch e is the pipeline's shard of the train
split in a shuffle whose seed is a function of (seed, e); epochs follow each
other without end. Resuming at step t starts at epoch t*n // N and skips the
rest of the t*n consumed examples (n = examples per step per pipeline, N = the
shard's size), so a resumed run sees exactly the examples it would have seen, whatever the
global TensorFlow seed.

Augmentation. Example k of the stream (counted from the start of training) draws
the parameters of view v from the stateless seed fold(fold(seed, k), v), so the
views do not depend on the batch size per replica, the number of replicas or
where a run resumed. Parameters are drawn per example; the pixel work then runs
batched, on the host in tf.data (`augment_on=host`) or inside the train step
(`augment_on=device`, see `ViewAugmenter`). Images of different sizes are
cropped to image_size per example before batching; images that all have one size
are cropped in the batched op.

Train elements, per replica: {"label": int32 [b], and either "views": tuple of
float32 [b, S, S, 3] in [0, 1] (host) or "inputs"/"parameters": a tuple, per
view, of images [b, H, W, 3] and their parameters (device)}. Pretraining has two
views; fine-tuning one, with crop and flip only (official finetune policy).

Eval elements (of the eval split, or any split for feature extraction), per
replica: {"image": float32 [b, S, S, 3] (center crop),
"label": int32 [b], "mask": float32 [b]}; the split is padded with mask 0 to
exactly `num_steps` global batches.
"""

import tensorflow as tf

from tf_simclr import augment, data
from tf_simclr import config as config_lib
from tf_simclr.augment import crop as crop_lib
from tf_simclr.augment import plan
from tf_simclr.train import strategy as strategy_lib

# Shuffle buffer in batches of one input pipeline (official: 50 at image_size <=
# 32, else 10, of per-replica batches). Per pipeline rather than per replica, so
# the order does not depend on the number of replicas; capped for large images,
# whose decoded copies fill the buffer (ImageNet averages ~0.4 MiB per image).
_SMALL_BUFFER_MAX_SIDE = 32
_SMALL_IMAGE_BUFFER_BATCHES = 50
_LARGE_IMAGE_BUFFER_BATCHES = 10
_LARGE_IMAGE_BUFFER_CAP = 16384
_EPOCH_SEED_STRIDE = 1_000_003


def num_views(config):
    return 2 if config.train.train_mode == "pretrain" else 1


def train_augment(config, crop=True, vectorized=False):
    """The SimCLRAugment of a run: the full policy when pretraining, crop+flip else."""
    pretrain = config.train.train_mode == "pretrain"
    return augment.SimCLRAugment(
        config.data.image_size,
        color_jitter_strength=config.augment.color_jitter_strength if pretrain else 0.0,
        use_blur=config.augment.use_blur and pretrain,
        color_jitter_impl=config.augment.color_jitter_impl,
        crop_sampler=config.augment.crop_sampler, crop_min_area=config.augment.crop_min_area,
        crop=crop, vectorized=vectorized)


def check_image_size(config, info):
    """At <= 32 px there is no eval crop: images must already be image_size square."""
    size = config.data.image_size
    if not plan.eval_crops(size) and info.image_shape is not None:
        if tuple(info.image_shape[:2]) != (size, size):
            raise config_lib.ConfigError(
                f"--image_size={size} but {info.name} images are "
                f"{info.image_shape[0]}x{info.image_shape[1]}; at image_size <= "
                f"{plan.EVAL_NO_CROP_MAX_SIDE} evaluation neither crops nor resizes (as the "
                f"official code), so expected --image_size={info.image_shape[0]}.")


def _examples_per_step_per_pipeline(config, input_context):
    return input_context.get_per_replica_batch_size(config.train.train_batch_size) * (
        input_context.num_replicas_in_sync // input_context.num_input_pipelines)


def _shard_size(source, base, input_context):
    if input_context.num_input_pipelines == 1:
        return source.info.num_train_examples
    size = int(base.cardinality())
    if size < 0:
        size = int(base.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
    return size


def _example_seed(seed, index, view):
    """int32 [2]: the stateless seed of `view` of stream example `index`."""
    base = tf.constant([seed % 2**31, 0x5EED], tf.int32)
    per_example = tf.random.experimental.stateless_fold_in(base, index)
    return tf.random.experimental.stateless_fold_in(per_example, view)


def _crop_one(image, box, size):
    """Crops uint8 [H, W, 3] to box [4] and resizes bicubic: float32 [S, S, 3]."""
    return crop_lib.resize_crop(image[None], box, size)[0]


def _train_stream(source, config, input_context, start_step):
    """Per-pipeline infinite stream of (stream index, example) from `start_step`."""
    split = config.data.train_split
    base = source.examples(split, input_context)
    if config.data.cache_dataset:
        base = base.cache()
    shard = _shard_size(source, base, input_context)
    if shard == 0:
        raise data.DataError(f"--train_split={split!r} of {source.info.name} gives this "
                                 "input pipeline no examples; expected a non-empty split.")
    per_step = _examples_per_step_per_pipeline(config, input_context)
    consumed = start_step * per_step
    first_epoch, offset = divmod(consumed, shard)
    if config.data.image_size <= _SMALL_BUFFER_MAX_SIDE:
        buffer = per_step * _SMALL_IMAGE_BUFFER_BATCHES
    else:
        buffer = min(per_step * _LARGE_IMAGE_BUFFER_BATCHES, _LARGE_IMAGE_BUFFER_CAP)
    seed = config.train.seed + 7919 * input_context.input_pipeline_id

    def epoch(e):
        # Dataset.shuffle combines its seed with the global seed (tf.random.set_seed):
        # the order would depend on it, and a global seed of 0 even raises (get_seed
        # compares (0, <tensor>) with (0, 0)). Clearing the seed of this function's
        # graph leaves the order a function of (seed, e) only.
        tf.compat.v1.get_default_graph().seed = None
        return base.shuffle(buffer, seed=seed * _EPOCH_SEED_STRIDE + e,
                            reshuffle_each_iteration=False)

    stream = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
    return stream.enumerate(start=consumed), seed


def _train_dataset(source, config, input_context, start_step, on_device):
    sampler = train_augment(config)
    fixed_size = source.info.image_shape is not None
    stream, seed = _train_stream(source, config, input_context, start_step)
    views = num_views(config)
    size = config.data.image_size

    def draw(index, example):
        image = example["image"]
        shape = tf.concat([[1], tf.shape(image)], 0)
        inputs, parameters = [], []
        for view in range(views):
            drawn = sampler.sample_parameters(shape, _example_seed(seed, index, view))
            drawn = tf.nest.map_structure(lambda t: t[0], drawn)
            if fixed_size:
                inputs.append(image)
            else:
                inputs.append(_crop_one(image, drawn.pop("crop")["boxes"], size))
            parameters.append(drawn)
        return {"inputs": tuple(inputs), "parameters": tuple(parameters),
                "label": example["label"]}

    per_replica = input_context.get_per_replica_batch_size(config.train.train_batch_size)
    dataset = stream.map(draw, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(per_replica, drop_remainder=True)
    if not on_device:
        augmenter = ViewAugmenter(config, fixed_size)
        dataset = dataset.map(
            lambda batch: {"views": augmenter(batch), "label": batch["label"]},
            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


class ViewAugmenter:
    """Applies a batch's drawn parameters: batch -> tuple of float32 [b, S, S, 3].

    Works in tf.data (host augmentation) and inside `strategy.run` (device).
    `fixed_size`: the inputs are the uncropped images (crop in the batched op);
    otherwise they were cropped per example already. `vectorized`: see
    augment.SimCLRAugment (static shapes, for TPUs and GPUs).
    """

    def __init__(self, config, fixed_size, vectorized=False):
        self._augment = train_augment(config, crop=fixed_size, vectorized=vectorized)

    @property
    def vectorized(self):
        return self._augment.vectorized

    def __call__(self, batch):
        return tuple(self._augment.apply_parameters(images, parameters)
                     for images, parameters in zip(batch["inputs"], batch["parameters"]))


def device_augmenter(config, info):
    """The step-side augmenter for augment_on=device, else None; vectorized when the
    step runs on TPUs or GPUs (a TPU step must compile with static shapes)."""
    if config.augment.augment_on != "device":
        return None
    return ViewAugmenter(config, info.image_shape is not None,
                           vectorized=strategy_lib.on_accelerators(config.hardware))


def distributed_train_dataset(strategy, source, config, start_step):
    """The train stream of `config`, distributed over `strategy`, from `start_step`."""
    on_device = config.augment.augment_on == "device"
    return strategy.distribute_datasets_from_function(
        lambda context: _train_dataset(source, config, context, start_step, on_device))


def _eval_dataset(source, config, input_context, num_steps, split):
    per_replica = input_context.get_per_replica_batch_size(config.train.eval_batch_size)
    replicas_here = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    local_batches = num_steps * replicas_here
    size = config.data.image_size
    center_crop = augment.CenterCropResize(size)
    dataset = source.examples(split, input_context)
    if source.info.image_shape is not None:
        # Images of one size go through the crop a batch at a time (one op per batch
        # instead of per image: 2x faster on Fashion-MNIST); the last partial batch
        # is padded with mask 0, as the per-example path below pads the split.
        def prepare_batch(batch):
            count = tf.shape(batch["label"])[0]
            pad = per_replica - count
            images = tf.pad(center_crop(batch["image"]), [[0, pad], [0, 0], [0, 0], [0, 0]])
            return {"image": tf.ensure_shape(images, [per_replica, size, size, 3]),
                    "label": tf.ensure_shape(tf.pad(batch["label"], [[0, pad]]), [per_replica]),
                    "mask": tf.ensure_shape(tf.pad(tf.ones([count]), [[0, pad]]), [per_replica])}

        padding = tf.data.Dataset.from_tensors({
            "image": tf.zeros([per_replica, size, size, 3]),
            "label": tf.zeros([per_replica], tf.int32),
            "mask": tf.zeros([per_replica])}).repeat()
        dataset = dataset.batch(per_replica).map(prepare_batch, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.concatenate(padding).take(local_batches).prefetch(tf.data.AUTOTUNE)

    def prepare(example):
        return {"image": center_crop(example["image"]), "label": example["label"],
                "mask": tf.constant(1.0)}

    padding = tf.data.Dataset.from_tensors({
        "image": tf.zeros([size, size, 3]), "label": tf.constant(0, tf.int32),
        "mask": tf.constant(0.0)}).repeat()
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.concatenate(padding).take(local_batches * per_replica)
    return dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def distributed_eval_dataset(strategy, source, config, num_steps, split=None):
    """`split` (default the eval split) with eval preprocessing, padded to `num_steps`
    global batches, distributed over `strategy`."""
    split = config.data.eval_split if split is None else split
    return strategy.distribute_datasets_from_function(
        lambda context: _eval_dataset(source, config, context, num_steps, split))
