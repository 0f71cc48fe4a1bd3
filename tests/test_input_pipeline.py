"""input_pipeline: resumable, replica-invariant train stream; padded eval; size checks.

Sources here label example i with i (num_classes = N), so a label names an example.
Building a host-augmented dataset traces and XLA-compiles the augmentation again,
so the host streams are built once per module (`host_streams`) and shared; the
other tests read device-mode streams (parameters only) and apply the pipeline's
own ViewAugmenter eagerly where they need pixels.
"""

import dataclasses
import functools

import numpy as np
import pytest
import tensorflow as tf

import testutil
from tf_simclr import augment, data, input_pipeline
from tf_simclr import config as config_lib
from tf_simclr.augment import plan
from tf_simclr.train import strategy as strategy_lib

SIZE = 16
NUM_TRAIN = 22          # not a multiple of the global batch: epochs end inside batches
GLOBAL_BATCH = 8
STEPS = 6               # 48 examples: epochs end at 22 (in step 2) and 44 (in step 5)
RESUME_AT = 3           # example 24: epoch 1, offset 2
# The data order is a function of TF's global seed too (tf.data shuffle combines its
# op seed with it), so every build below starts from the same global seed.
GLOBAL_SEED = 1234

SOLID = {10: (200, 30, 90), 11: (20, 220, 140), 12: (120, 120, 240)}
GRAY = (13, 14)


def _train_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_TRAIN, SIZE, SIZE, 3)).astype(np.uint8)
    for i, colour in SOLID.items():
        images[i] = colour
    ramp = np.linspace(10, 245, SIZE)
    for i in GRAY:
        gray = (ramp[:, None] + ramp[None, :]) / 2 + rng.normal(0, 8, (SIZE, SIZE))
        images[i] = np.clip(gray, 0, 255).astype(np.uint8)[..., None]
    return images


def _source(images, test_images=None):
    splits = {"train": (images, np.arange(len(images)))}
    if test_images is not None:
        splits["test"] = (test_images, np.arange(len(test_images)) + 100)
    return testutil.ArraySource(splits, num_classes=max(len(images), 1))


class VariableSizeSource(data.ImageSource):
    """Train images of different shapes (image_shape None), label i for image i."""

    def __init__(self, images):
        self._images = [np.asarray(image, np.uint8) for image in images]
        shapes = {image.shape for image in self._images}
        self.info = data.DatasetInfo(
            name="variable", num_classes=len(images), num_train_examples=len(images),
            num_eval_examples=0, image_shape=None)
        self.fixed_shape = shapes.pop() if len(shapes) == 1 else None

    def examples(self, split, input_context=None, shuffle_files=False, seed=None):
        parts = [tf.data.Dataset.from_tensors(
            {"image": tf.constant(image), "label": tf.constant(i, tf.int32)})
            for i, image in enumerate(self._images)]
        dataset = functools.reduce(lambda a, b: a.concatenate(b), parts)
        assert dataset.element_spec["image"].shape.as_list() == (
            [None, None, 3] if self.fixed_shape is None else list(self.fixed_shape))
        return dataset


def _config(model_dir, **fields):
    fields = {"train_batch_size": GLOBAL_BATCH, "eval_batch_size": 4,
              "image_size": SIZE, **fields}
    return testutil.tiny_config(model_dir, **fields)


def _batches(strategy, source, config, start_step, steps, global_seed=GLOBAL_SEED):
    """[step][replica] -> that replica's batch as a nest of numpy arrays."""
    tf.random.set_seed(global_seed)
    dataset = input_pipeline.distributed_train_dataset(strategy, source, config, start_step)
    iterator = iter(dataset)
    out = []
    for _ in range(steps):
        element = next(iterator)
        leaves = [strategy.experimental_local_results(leaf) for leaf in tf.nest.flatten(element)]
        out.append([
            tf.nest.pack_sequence_as(element, [leaf[replica].numpy() for leaf in leaves])
            for replica in range(strategy.num_replicas_in_sync)])
    return out


def _global(step_batches):
    """Replica 0 then replica 1 ... of one step, concatenated along the batch."""
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *step_batches)


def _assert_nests_equal(actual, expected):
    tf.nest.assert_same_structure(actual, expected)
    for a, e in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
        np.testing.assert_array_equal(a, e)


def _stream_labels(batches):
    return np.concatenate([_global(step)["label"] for step in batches])


@pytest.fixture(scope="module")
def train_images():
    return _train_images()


def _streams(model_dir, train_images, augment_on):
    """(config, source, {(replicas, start step): batches up to step STEPS})."""
    source = _source(train_images)
    config = _config(model_dir, augment_on=augment_on)
    streams = {}
    for replicas in (1, 2):
        strategy = testutil.mirrored(replicas)
        for start in (0, RESUME_AT):
            streams[replicas, start] = _batches(strategy, source, config, start, STEPS - start)
    return config, source, streams


@pytest.fixture(scope="module")
def host_streams(tmp_path_factory, train_images):
    return _streams(tmp_path_factory.mktemp("host"), train_images, "host")[2]


@pytest.fixture(scope="module")
def device_streams(tmp_path_factory, train_images):
    return _streams(tmp_path_factory.mktemp("device"), train_images, "device")


# Resume ----------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2])
def test_host_resume_equals_continuing_stream(host_streams, replicas):
    full, resumed = host_streams[replicas, 0], host_streams[replicas, RESUME_AT]
    assert len(resumed) == STEPS - RESUME_AT
    for step, batches in enumerate(resumed, start=RESUME_AT):
        for replica, batch in enumerate(batches):
            assert set(batch) == {"views", "label"}
            _assert_nests_equal(batch, full[step][replica])
    # The stream runs over epoch boundaries, in a new order each epoch.
    labels = _stream_labels(full)
    assert sorted(labels[:NUM_TRAIN]) == list(range(NUM_TRAIN))
    assert sorted(labels[NUM_TRAIN:2 * NUM_TRAIN]) == list(range(NUM_TRAIN))
    assert not np.array_equal(labels[:NUM_TRAIN], labels[NUM_TRAIN:2 * NUM_TRAIN])


@pytest.mark.parametrize("replicas", [1, 2])
def test_device_resume_equals_continuing_stream(device_streams, train_images, replicas):
    _, _, streams = device_streams
    full, resumed = streams[replicas, 0], streams[replicas, RESUME_AT]
    for step, batches in enumerate(resumed, start=RESUME_AT):
        for replica, batch in enumerate(batches):
            assert set(batch) == {"inputs", "parameters", "label"}
            _assert_nests_equal(batch, full[step][replica])
    # Fixed-size images reach the device uncropped, as uint8, with their crop boxes.
    batch = full[0][0]
    per_replica = GLOBAL_BATCH // replicas
    assert len(batch["inputs"]) == len(batch["parameters"]) == 2
    for images, parameters in zip(batch["inputs"], batch["parameters"]):
        assert images.dtype == np.uint8 and images.shape == (per_replica, SIZE, SIZE, 3)
        np.testing.assert_array_equal(images, train_images[batch["label"]])
        assert parameters["crop"]["boxes"].shape == (per_replica, 4)
        assert set(parameters) == {"crop", "flip", "color"}


def test_resume_far_into_training(tmp_path, train_images):
    """Resuming at step 55 (example 440: epoch 20 exactly, offset 0) continues the stream."""
    source = _source(train_images)
    config = _config(tmp_path, augment_on="device")
    strategy = testutil.mirrored(1)
    assert 55 * GLOBAL_BATCH == 20 * NUM_TRAIN
    full = _batches(strategy, source, config, 0, 57)
    resumed = _batches(strategy, source, config, 55, 2)
    for step, batches in enumerate(resumed, start=55):
        _assert_nests_equal(batches, full[step])


def test_multi_pipeline_resume(tmp_path, train_images):
    """With 2 input pipelines (multi-worker), each resumes its own shard exactly."""
    source = _source(train_images)
    config = _config(tmp_path, augment_on="device")
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)

        def take(start, steps):
            tf.random.set_seed(GLOBAL_SEED)
            dataset = input_pipeline._train_dataset(source, config, context, start, True)
            return [tf.nest.map_structure(lambda t: t.numpy(), batch)
                    for batch in dataset.take(steps)]

        full = take(0, 7)           # 7 * 4 = 28 examples of an 11-example shard
        if pipeline == 1:
            for step, batch in enumerate(take(3, 4), start=3):
                _assert_nests_equal(batch, full[step])
        labels = np.concatenate([batch["label"] for batch in full])
        shard = np.array_split(np.arange(NUM_TRAIN), 2)[pipeline]
        size = len(shard)
        assert sorted(labels[:size]) == list(shard)
        assert sorted(labels[size:2 * size]) == list(shard)
        seen.append(full)
    # The pipelines draw different augmentations (seed + 7919 * pipeline id).
    assert not np.array_equal(seen[0][0]["parameters"][0]["crop"]["boxes"],
                              seen[1][0]["parameters"][0]["crop"]["boxes"])


# Replica invariance ------------------------------------------------------------------


def test_host_two_replicas_concatenate_to_one_replica_batch(host_streams):
    one, two = host_streams[1, 0], host_streams[2, 0]
    for step in range(STEPS):
        assert [b["label"].shape for b in two[step]] == [(GLOBAL_BATCH // 2,)] * 2
        _assert_nests_equal(_global(two[step]), one[step][0])


def test_device_two_replicas_concatenate_to_one_replica_batch(device_streams):
    _, _, streams = device_streams
    for step in range(STEPS):
        _assert_nests_equal(_global(streams[2, 0][step]), streams[1, 0][step][0])


def test_order_is_replica_invariant_beyond_the_shuffle_buffer(tmp_path):
    n = 512                        # > 50 * 8, the shuffle buffer of either run
    rng = np.random.default_rng(1)
    source = _source(rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8))
    config = _config(tmp_path, augment_on="device")
    one = _stream_labels(_batches(testutil.mirrored(1), source, config, 0, 2))
    two = _stream_labels(_batches(testutil.mirrored(2), source, config, 0, 2))
    np.testing.assert_array_equal(two, one)


# Epochs and seeds --------------------------------------------------------------------


def test_epochs_cover_split_once_in_seeded_orders(tmp_path):
    n = 24                         # 3 steps of 8 per epoch
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
    source = _source(images)
    config = _config(tmp_path, augment_on="device")
    strategy = testutil.mirrored(2)

    def run(cfg):
        """(per-replica steps, [epoch 0 global batches, epoch 1 global batches])."""
        steps = _batches(strategy, source, cfg, 0, 6)
        batches = [_global(step) for step in steps]
        return steps, [batches[:3], batches[3:]]

    def orders(epochs):
        return [np.concatenate([b["label"] for b in epoch]) for epoch in epochs]

    steps, first = run(config)
    for epoch, labels in zip(first, orders(first)):
        assert sorted(labels) == list(range(n))        # every example exactly once
        for b in epoch:                                  # with its own image, both views
            for view in b["inputs"]:
                np.testing.assert_array_equal(view, images[b["label"]])
    order0, order1 = orders(first)
    assert not np.array_equal(order0, order1)
    assert not np.array_equal(order0, np.arange(n))

    _assert_nests_equal(run(config)[1], first)           # same config and seed

    other_steps, other = run(config.replace(seed=1))
    other0, other1 = orders(other)
    assert sorted(other0) == list(range(n))
    assert not np.array_equal(other0, order0)
    assert not np.array_equal(other1, order1)

    # The seed draws the augmentation too, not just the order: at the same stream
    # positions the crop boxes differ ...
    boxes = [b["parameters"][0]["crop"]["boxes"] for b in (first[0][0], other[0][0])]
    assert np.mean(np.any(boxes[0] != boxes[1], axis=1)) >= 0.5
    # ... and so do the views of the same example: compare example by example.
    augmenter = input_pipeline.device_augmenter(config, source.info)

    def views_by_label(steps):
        out = {}
        for step in steps[:3]:
            for b in step:          # per replica: the shapes other tests compiled
                views = [v.numpy() for v in augmenter(b)]
                for i, label in enumerate(b["label"]):
                    out[int(label)] = views[0][i]
        return out

    base, reseeded = views_by_label(steps), views_by_label(other_steps)
    assert sorted(base) == sorted(reseeded) == list(range(n))
    differ = [np.abs(base[k] - reseeded[k]).max() > 1e-2 for k in range(n)]
    assert sum(differ) >= n - 1


# Views ---------------------------------------------------------------------------------


def test_host_views_shapes_ranges_and_two_different_views(host_streams, train_images):
    views_seen = 0
    for step in host_streams[2, 0]:
        for batch in step:
            assert batch["label"].dtype == np.int32
            assert len(batch["views"]) == 2
            for view in batch["views"]:
                assert view.dtype == np.float32
                assert view.shape == (GLOBAL_BATCH // 2, SIZE, SIZE, 3)
                assert view.min() >= 0.0 and view.max() <= 1.0
            first, second = batch["views"]
            for i in range(len(batch["label"])):
                assert np.abs(first[i] - second[i]).max() > 1e-2
                views_seen += 1
    assert views_seen == STEPS * GLOBAL_BATCH
    # Pretraining jitters colours: some view of a solid image moves its mean colour.
    moved = 0.0
    for step in host_streams[1, 0]:
        batch = step[0]
        for i, label in enumerate(batch["label"]):
            if label in SOLID:
                for view in batch["views"]:
                    mean = view[i].reshape(-1, 3).mean(0)
                    moved = max(moved, np.abs(mean - np.array(SOLID[label]) / 255).max())
    assert moved > 0.05


def test_host_views_equal_device_augmenter_on_device_batches(host_streams, device_streams):
    """augment_on=host and augment_on=device give the same pixels."""
    config, source, streams = device_streams
    augmenter = input_pipeline.device_augmenter(config, source.info)
    for step in range(STEPS):
        host, device = host_streams[2, 0][step], streams[2, 0][step]
        for replica in range(2):
            np.testing.assert_array_equal(device[replica]["label"], host[replica]["label"])
            views = augmenter(device[replica])
            for got, want in zip(views, host[replica]["views"]):
                np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


def test_finetune_is_one_view_of_crop_and_flip_only(tmp_path, train_images):
    source = _source(train_images)
    config = _config(tmp_path, augment_on="host").replace(
        train_mode="finetune", finetune_from_scratch=True).validate()
    assert input_pipeline.num_views(config) == 1
    steps = _batches(testutil.mirrored(1), source, config, 0, 5)   # 2 epochs
    checked = set()
    for step in steps:
        batch = step[0]
        assert set(batch) == {"views", "label"} and len(batch["views"]) == 1
        view = batch["views"][0]
        assert view.shape == (GLOBAL_BATCH, SIZE, SIZE, 3) and view.dtype == np.float32
        assert view.min() >= 0.0 and view.max() <= 1.0
        for i, label in enumerate(batch["label"]):
            image = view[i]
            if label in SOLID:      # no jitter: a solid colour stays that colour
                np.testing.assert_allclose(image.reshape(-1, 3).mean(0),
                                           np.array(SOLID[label]) / 255, atol=1e-5)
                checked.add(label)
            if label in GRAY:       # no jitter, no grayscale needed: gray stays gray
                np.testing.assert_allclose(image[..., 0], image[..., 1], atol=1e-6)
                np.testing.assert_allclose(image[..., 0], image[..., 2], atol=1e-6)
                assert image.std() > 0.05      # the crop kept the gradient, not a blank
                checked.add(label)
    assert checked == set(SOLID) | set(GRAY)


# Images of varying sizes ---------------------------------------------------------------


def _variable_images():
    rng = np.random.default_rng(3)
    shapes = [(20, 24), (16, 30), (33, 17), (18, 18), (40, 25), (17, 16), (28, 21), (19, 36)]
    return [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for h, w in shapes * 2]


def test_variable_size_images_host_equals_device(tmp_path):
    source = VariableSizeSource(_variable_images())
    config = _config(tmp_path)
    strategy = testutil.mirrored(2)
    host = _batches(strategy, source, config.replace(augment_on="host"), 0, 3)
    device_config = config.replace(augment_on="device")
    device = _batches(strategy, source, device_config, 0, 3)
    augmenter = input_pipeline.device_augmenter(device_config, source.info)
    for step in range(3):
        for replica in range(2):
            h, d = host[step][replica], device[step][replica]
            np.testing.assert_array_equal(h["label"], d["label"])
            for images, parameters in zip(d["inputs"], d["parameters"]):
                # Cropped per example on the host: float32 S x S, no box left to apply.
                assert images.dtype == np.float32 and images.shape == (4, SIZE, SIZE, 3)
                assert "crop" not in parameters
            for got, want in zip(augmenter(d), h["views"]):
                assert want.shape == (4, SIZE, SIZE, 3) and want.dtype == np.float32
                assert want.min() >= 0.0 and want.max() <= 1.0
                np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    assert sorted(_stream_labels(host)[:16]) == list(range(16))


def test_per_example_crop_matches_batched_crop(tmp_path):
    """Same-size images read as variable-size get (almost) the fixed-size views."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (16, SIZE, SIZE, 3)).astype(np.uint8)
    variable, fixed = VariableSizeSource(list(images)), _source(images)
    assert fixed.info.image_shape == (SIZE, SIZE, 3) and variable.info.image_shape is None
    config = _config(tmp_path, augment_on="device")
    strategy = testutil.mirrored(2)     # per-replica shapes compiled by other tests
    v = _batches(strategy, variable, config, 0, 2)
    f = _batches(strategy, fixed, config, 0, 2)
    v_aug = input_pipeline.device_augmenter(config, variable.info)
    f_aug = input_pipeline.device_augmenter(config, fixed.info)
    for step in range(2):
        for vb, fb in zip(v[step], f[step]):
            np.testing.assert_array_equal(vb["label"], fb["label"])
            for got, want in zip(v_aug(vb), f_aug(fb)):
                np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-4)


# Eval ----------------------------------------------------------------------------------


def _eval_rows(strategy, source, config, num_steps):
    rows = {"image": [], "label": [], "mask": []}
    per_replica = config.train.eval_batch_size // strategy.num_replicas_in_sync
    dataset = input_pipeline.distributed_eval_dataset(strategy, source, config, num_steps)
    steps = 0
    for element in dataset:
        steps += 1
        for key in rows:
            parts = strategy.experimental_local_results(element[key])
            assert [p.shape[0] for p in parts] == [per_replica] * strategy.num_replicas_in_sync
            rows[key].extend(p.numpy() for p in parts)
    assert steps == num_steps
    return {key: np.concatenate(value) for key, value in rows.items()}


@pytest.mark.parametrize("fixed_size", [True, False], ids=["batched", "per_example"])
@pytest.mark.parametrize("height,width,image_size", [(16, 16, 16), (48, 56, 40)])
def test_eval_pads_to_whole_batches_with_mask(tmp_path, height, width, image_size, fixed_size):
    rng = np.random.default_rng(5)
    test_images = rng.integers(0, 256, (13, height, width, 3)).astype(np.uint8)
    source = _source(rng.integers(0, 256, (8, height, width, 3)).astype(np.uint8), test_images)
    if not fixed_size:  # as for a folder of images of several sizes
        source.info = dataclasses.replace(source.info, image_shape=None)
    config = _config(tmp_path, image_size=image_size, eval_batch_size=4)
    rows = _eval_rows(testutil.mirrored(2), source, config, num_steps=4)
    assert rows["image"].shape == (16, image_size, image_size, 3)
    assert rows["image"].dtype == np.float32 and rows["mask"].dtype == np.float32
    assert rows["label"].dtype == np.int32
    real = rows["mask"] == 1
    assert set(np.unique(rows["mask"])) == {0.0, 1.0}
    assert real.sum() == 13
    assert sorted(rows["label"][real]) == list(range(100, 113))
    np.testing.assert_array_equal(rows["image"][~real], 0.0)
    np.testing.assert_array_equal(rows["label"][~real], 0)
    center_crop = augment.CenterCropResize(image_size)
    for image, label in zip(rows["image"][real], rows["label"][real]):
        original = test_images[label - 100]
        if not plan.eval_crops(image_size):
            np.testing.assert_allclose(image, original / 255.0, rtol=0, atol=1e-6)
        else:
            np.testing.assert_allclose(image, center_crop(original).numpy(), rtol=0, atol=1e-6)
            assert image.min() >= 0.0 and image.max() <= 1.0
            # Not a plain resize of the whole image: the center crop cuts the border.
            whole = tf.image.resize(original[None] / 255.0, [image_size] * 2, "bicubic")[0]
            assert np.abs(image - whole.numpy()).max() > 1e-2


def test_eval_with_more_steps_is_all_padding_after_the_split(tmp_path):
    rng = np.random.default_rng(6)
    test_images = rng.integers(0, 256, (5, SIZE, SIZE, 3)).astype(np.uint8)
    source = _source(rng.integers(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8), test_images)
    config = _config(tmp_path, eval_batch_size=4)
    rows = _eval_rows(testutil.mirrored(1), source, config, num_steps=3)
    np.testing.assert_array_equal(rows["mask"], [1] * 5 + [0] * 7)
    np.testing.assert_array_equal(rows["label"][:5], np.arange(100, 105))


# Checks ---------------------------------------------------------------------------------


def _info(image_shape, name="mnistish"):
    return data.DatasetInfo(name=name, num_classes=10, num_train_examples=100,
                                num_eval_examples=10, image_shape=image_shape)


def test_check_image_size(tmp_path):
    config = _config(tmp_path, image_size=32)
    with pytest.raises(config_lib.ConfigError) as raised:
        input_pipeline.check_image_size(config, _info((28, 28, 3)))
    message = str(raised.value)
    assert "32" in message and "28x28" in message and "mnistish" in message
    assert "--image_size=28" in message
    with pytest.raises(config_lib.ConfigError, match="28x32"):
        input_pipeline.check_image_size(config, _info((28, 32, 3)))
    # Accepted: matching size, unknown sizes, and sizes above 32 (eval crops).
    input_pipeline.check_image_size(config, _info((32, 32, 3)))
    input_pipeline.check_image_size(config, _info(None))
    input_pipeline.check_image_size(_config(tmp_path, image_size=40), _info((28, 28, 3)))


def test_empty_train_split_is_a_data_error(tmp_path):
    source = _source(np.zeros((0, SIZE, SIZE, 3), np.uint8))
    config = _config(tmp_path, augment_on="device")
    with pytest.raises(data.DataError, match="train_split='train'.*no examples"):
        input_pipeline.distributed_train_dataset(testutil.mirrored(1), source, config, 0)


def test_order_and_views_do_not_depend_on_the_global_seed(tmp_path, train_images):
    # job.run seeds Keras/TF from --seed (default 0) for the weights; a global seed
    # of 0 once crashed Dataset.shuffle, and any global seed changed the order.
    source = _source(train_images)
    config = _config(tmp_path)
    strategy = testutil.mirrored(1)
    reference = _batches(strategy, source, config, 0, 4)
    for global_seed in (0, 7):
        for step, other in zip(reference, _batches(strategy, source, config, 0, 4, global_seed)):
            _assert_nests_equal(other[0], step[0])


def test_device_augmenter_on_a_tpu_is_vectorized_and_gives_the_host_views(
        host_streams, device_streams):
    """With --use_tpu the step-side augmentation has static shapes (it compiles with
    XLA here, as a TPU step must) and makes the same pixels as the host."""
    config, source, streams = device_streams
    tpu_config = config.replace(use_tpu=True)
    assert strategy_lib.on_accelerators(tpu_config.hardware)
    augmenter = input_pipeline.device_augmenter(tpu_config, source.info)
    assert augmenter.vectorized
    assert not input_pipeline.device_augmenter(config, source.info).vectorized
    compiled = tf.function(augmenter, jit_compile=True)
    host, device = host_streams[2, 0][0], streams[2, 0][0]
    for replica in range(2):
        for got, want in zip(compiled(device[replica]), host[replica]["views"]):
            np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=2e-5)


def test_train_augment_takes_the_augmentation_flags():
    config = config_lib.Config().replace(
        image_size=28, crop_min_area=0.4, color_jitter_strength=0.3, use_blur=False,
        crop_sampler="paper")
    views = input_pipeline.train_augment(config)
    assert (views.random_crop.min_area, views.random_crop.sampler) == (0.4, "paper")
    assert views.color_jitter_strength == 0.3 and not views.use_blur
    # Fine-tuning keeps the crop (and its area) but no colour or blur.
    tuned = input_pipeline.train_augment(config.replace(train_mode="finetune",
                                                        use_blur=True))
    assert tuned.random_crop.min_area == 0.4
    assert tuned.color_jitter_strength == 0.0 and not tuned.use_blur
