"""TFDS image-classification datasets as image sources, read offline.

`fashion_mnist` is first prepared from Debian's `dataset-fashion-mnist` files when it
is missing (`fashion_mnist_offline`); nothing is ever downloaded.
"""

import difflib
import logging
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_simclr.data import fashion_mnist_offline
from tf_simclr.data.source import (
    IMAGE_FOLDER,
    UNLABELED,
    DataError,
    DatasetInfo,
    ImageSource,
    check_directory,
    decode_rgb,
    is_unlabeled_split,
    pipeline_shard,
    split_names,
    stratified_subset,
)

logger = logging.getLogger(__name__)


class TfdsSource(ImageSource):
    """A prepared TFDS image-classification dataset (supervised keys image, label).

    Split sizes and class count come from the builder's metadata. Under
    `tfds.testing.mock_data` the metadata has no splits; sizes are then counted
    by reading and pipelines are sharded by element instead of by sub-split.
    """

    def __init__(self, builder, data_config, seed=0, hide_labels=False):
        self._builder = builder
        self._name = data_config.dataset
        self._train_split = data_config.train_split
        self._image_key, self._label_key, num_classes, image_shape = (
            _supervised_features(builder, self._name))
        self._splits_known = bool(builder.info.splits)
        self._check_split(data_config.train_split, "train_split")
        num_eval = 0
        if data_config.eval_split:
            self._check_split(data_config.eval_split, "eval_split")
            num_eval = self._count(data_config.eval_split)
        self._train_keep, self._hide_labels = None, hide_labels
        if data_config.label_fraction < 1:
            ids, labels = self._ids_and_labels(data_config.train_split)
            keep = stratified_subset(ids, labels, data_config.label_fraction, seed,
                                     name=self._name, split=self._train_split)
            # Created once: the filter of every examples() call captures it.
            self._train_keep = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(keep), tf.ones(len(keep), tf.bool)),
                default_value=False)
            num_train = len(ids) if hide_labels else len(keep)
        else:
            num_train = self._count(data_config.train_split)
        self.info = DatasetInfo(name=self._name, num_classes=num_classes,
                                num_train_examples=num_train,
                                num_eval_examples=num_eval, image_shape=image_shape)

    def examples(self, split, input_context=None, shuffle_files=False, seed=None):
        num_pipelines, index = pipeline_shard(input_context)
        read_split = split
        if num_pipelines > 1 and self._splits_known:
            # Sub-splits of equal size work for any number of files per split,
            # unlike ReadConfig(input_context), which needs a file per pipeline.
            read_split = tfds.even_splits(split, num_pipelines)[index]
        keep = self._train_keep if split == self._train_split else None
        ds = self._read(read_split, with_ids=keep is not None,
                        shuffle_files=shuffle_files, seed=seed)
        if num_pipelines > 1 and not self._splits_known:
            ds = ds.shard(num_pipelines, index)
        hide = keep is not None and self._hide_labels
        if keep is not None and not hide:
            ds = ds.filter(lambda ex: keep.lookup(ex["tfds_id"]))
        unlabeled = is_unlabeled_split(split)
        image_key, label_key = self._image_key, self._label_key
        image_shape = self.info.image_shape

        def to_example(ex):
            label = tf.cast(ex[label_key], tf.int32)
            if unlabeled:
                label = tf.constant(UNLABELED, tf.int32)
            if hide:
                label = tf.where(keep.lookup(ex["tfds_id"]), label, UNLABELED)
            return {"image": decode_rgb(ex[image_key], image_shape), "label": label}

        return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)

    def _read(self, split, with_ids, shuffle_files=False, seed=None):
        """The records of `split`: encoded image bytes, int64 label (and tfds_id).

        Images stay encoded here, also when only labels are wanted: mock_data
        generates different examples for different feature subsets.
        """
        decoders = tfds.decode.PartialDecoding(
            {self._image_key: True, self._label_key: True},
            decoders={self._image_key: tfds.decode.SkipDecoding()})
        read_config = tfds.ReadConfig(shuffle_seed=seed, add_tfds_id=with_ids,
                                      interleave_cycle_length=32,
                                      interleave_block_length=1)
        return self._builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                        decoders=decoders, read_config=read_config)

    def _check_split(self, split, flag):
        if not self._splits_known:
            return
        available = sorted(str(name) for name in self._builder.info.splits)
        for name in split_names(split):
            if name not in available:
                raise DataError(
                    f"--{flag}={split!r}: {self._name} has no split {name!r}; "
                    f"expected one of {', '.join(available)} (TFDS split syntax, "
                    "e.g. 'train[:90%]').")
        try:
            self._builder.info.splits[split]
        except (KeyError, ValueError) as e:
            raise DataError(f"--{flag}={split!r} is not a valid TFDS split expression "
                            f"for {self._name} ({e}); expected e.g. 'train', "
                            "'train[:10%]' or 'train[1000:]'.") from e

    def _count(self, split):
        """Examples in `split`: from metadata, or by reading when it has none."""
        if self._splits_known:
            return self._builder.info.splits[split].num_examples
        ds = self._read(split, with_ids=False)
        return int(ds.reduce(np.int64(0), lambda count, _: count + 1).numpy())

    def _ids_and_labels(self, split):
        """(tfds ids [N] bytes, labels [N] int64) of `split`.

        One pass over the split's records, without decoding images.
        """
        ids, labels = [], []
        ds = self._read(split, with_ids=True)
        for batch in ds.batch(8192).prefetch(1):
            ids.append(batch["tfds_id"].numpy())
            labels.append(batch[self._label_key].numpy())
        labels = np.concatenate(labels)
        if is_unlabeled_split(split):
            labels = np.full_like(labels, UNLABELED)
        return np.concatenate(ids), labels


def _supervised_features(builder, name):
    """(image key, label key, num_classes, image_shape) of an image-label dataset."""
    info = builder.info
    keys = info.supervised_keys
    features = info.features
    if (not isinstance(keys, tuple) or len(keys) != 2
            or not all(isinstance(k, str) for k in keys)
            or not isinstance(features[keys[0]], tfds.features.Image)
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)):
        raise DataError(
            f"--dataset={name!r} is not an image-classification dataset: its "
            f"supervised keys are {keys!r} over features {list(features.keys())}; "
            "expected (image, label) with an Image and a ClassLabel feature, or use "
            "--dataset=image_folder.")
    image = features[keys[0]]
    if image.np_dtype != np.uint8:
        raise DataError(f"--dataset={name!r} stores {image.np_dtype} images; "
                        "expected uint8 images.")
    height, width, _ = image.shape
    image_shape = (height, width, 3) if height and width else None
    return keys[0], keys[1], features[keys[1]].num_classes, image_shape


def tfds_builder(data_config):
    """The TFDS builder of a prepared dataset; DataError if it is not prepared."""
    name = data_config.dataset
    base_name = re.split(r"[:/]", name, maxsplit=1)[0]
    registered = tfds.list_builders(with_community_datasets=False)
    if base_name not in registered:
        close = difflib.get_close_matches(base_name, registered + [IMAGE_FOLDER], n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise DataError(
            f"--dataset={name!r} is not a TFDS dataset.{hint} Expected a TFDS name "
            "(see `tfds.list_builders()`), or --dataset=image_folder "
            "--data_dir=<folder> for your own images.")
    data_dir = data_config.data_dir
    if base_name == "fashion_mnist" and name == base_name:
        fashion_mnist_offline.ensure_prepared(data_dir)
    elif data_dir is not None:
        check_directory(data_dir, "--data_dir")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    # TFDS raises ValueError for an unknown config ("imagenet2012_subset/2pct") and
    # AssertionError for an unknown version ("cifar10:9.9.9").
    except (ValueError, AssertionError) as e:
        raise DataError(f"--dataset={name!r}: {e}") from e
    if not builder.is_prepared():
        root = data_dir or "~/tensorflow_datasets"
        how = f"run `tfds build {name} --data_dir={root}` on a machine with internet"
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            how = (f"download the files described below into {root}/downloads/manual, "
                   f"then run `tfds build {name} --data_dir={root}`:\n"
                   f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
        raise DataError(
            f"--dataset={name!r} is not prepared in "
            f"{data_dir or 'the default TFDS data_dir'} (looked for "
            f"{builder.data_dir}), and tf_simclr never downloads data. To prepare "
            f"it, {how}")
    return builder
