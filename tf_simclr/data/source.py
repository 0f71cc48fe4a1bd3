"""The interface every image source implements, and what sources share.

Every source yields the same elements, whatever the storage:

    {"image": uint8 [H, W, 3], "label": int32 []}

Grayscale and RGBA images arrive as RGB; `label` is UNLABELED (-1) for unlabeled
examples. Here: `ImageSource` and `DatasetInfo`, `DataError`, split-name helpers,
pipeline sharding, the stratified label subset, image decoding.
"""

import abc
import dataclasses
import logging
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_simclr.errors import DataError

logger = logging.getLogger(__name__)

UNLABELED = -1
IMAGE_FOLDER = "image_folder"
# TFDS split names whose examples carry no label (stl10 stores -1 in them).
UNLABELED_SPLIT_NAMES = ("unlabelled", "unlabeled")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the training loop needs to know about a source before reading it."""
    name: str
    num_classes: int            # 0 when the data has no labels
    num_train_examples: int     # in data_config.train_split, after label_fraction
                                # (all of them when its labels are hidden)
    num_eval_examples: int      # in data_config.eval_split (0 if there is none)
    image_shape: Optional[tuple]  # (H, W, 3) when every image has it, else None


class ImageSource(abc.ABC):
    """Named splits of images; `info` describes the configured train/eval splits."""

    info: DatasetInfo

    @abc.abstractmethod
    def examples(self, split, input_context=None, shuffle_files=False, seed=None):
        """One pass over `split` as a finite tf.data.Dataset.

        Args:
          split: data_config.train_split or data_config.eval_split (TFDS split
            syntax, e.g. "train[:10%]"). label_fraction applies to the train split.
          input_context: tf.distribute.InputContext; with more than one input
            pipeline each pipeline reads a disjoint part of the split.
          shuffle_files: read the files in a seeded random order.
          seed: the order's seed; the same seed gives the same order.

        Returns:
          Elements {"image": uint8 [H, W, 3], "label": int32 []}, label -1 when
          unlabeled.
        """


def split_names(split):
    """The split names a TFDS split expression reads: "train[:5%]+test" -> [train, test]."""
    return [part.split("[", 1)[0].strip() for part in split.split("+")]


def is_unlabeled_split(split):
    """True when every part of `split` is a split of unlabeled examples."""
    return all(name in UNLABELED_SPLIT_NAMES for name in split_names(split))


def pipeline_shard(input_context):
    """(number of input pipelines, this pipeline's index); (1, 0) without a context."""
    if input_context is None:
        return 1, 0
    return input_context.num_input_pipelines, input_context.input_pipeline_id


def stratified_subset(keys, labels, fraction, seed, name, split):
    """A seeded choice of the same fraction of every class.

    Each class c with n_c examples keeps max(1, round-half-up(fraction * n_c)) of
    them. The choice depends only on the (key, label) pairs and the seed, not on
    their order.

    Args:
      keys: [N] unique example keys (str or bytes), e.g. TFDS ids or file paths.
      labels: [N] int class ids; -1 (unlabeled) is refused.
      fraction: label_fraction, in (0, 1].
      seed: int.
      name, split: the dataset and train split, for messages.

    Returns:
      The chosen keys [M], sorted.
    """
    keys = np.asarray(keys)
    labels = np.asarray(labels)
    unlabeled = int(np.sum(labels < 0))
    if unlabeled:
        raise DataError(
            f"--label_fraction={fraction} needs labelled examples, but "
            f"--train_split={split!r} of {name} has {unlabeled} unlabeled example(s); "
            "expected --label_fraction=1 for unlabeled data.")
    order = np.argsort(keys, kind="stable")
    keys, labels = keys[order], labels[order]
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = keys[labels == label]
        count = max(1, int(np.floor(fraction * len(members) + 0.5)))
        chosen.append(rng.choice(members, size=count, replace=False))
    kept = np.sort(np.concatenate(chosen))
    logger.info("%s %s: label_fraction=%s keeps %d of %d examples (seed %d).",
                name, split, fraction, len(kept), len(keys), seed)
    return kept


def decode_rgb(encoded, image_shape=None):
    """Encoded PNG/JPEG/GIF/BMP/WebP bytes [] -> uint8 [H, W, 3].

    Grayscale is replicated to three channels, alpha is dropped, and a GIF gives
    its first frame.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    if image_shape is not None:
        return tf.ensure_shape(image, image_shape)
    image.set_shape([None, None, 3])
    return image


def check_directory(path, what):
    """Raises DataError unless `path` is an existing directory."""
    if not os.path.exists(path):
        raise DataError(f"{what} {path!r} does not exist; expected a directory.")
    if not os.path.isdir(path):
        raise DataError(f"{what} {path!r} is a file; expected a directory.")
