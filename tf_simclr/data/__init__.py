"""Image sources: the examples the SimCLR input pipeline reads, split by name.

SimCLR (Chen et al. 2020) pretrains on images alone and evaluates with labels, so
every source yields the same elements, whatever the storage (`source.py`).
`build_source(DataConfig)` picks the source:

* a TFDS image-classification dataset by name (`tfds.TfdsSource`), read from
  `data_dir` and never downloaded. `fashion_mnist` is first prepared offline from
  Debian's `dataset-fashion-mnist` files when it is missing (`fashion_mnist_offline`);
* `image_folder`: a folder of image files (see `image_folder` for its layout rules).

A source's order is deterministic for a fixed seed. Shuffling, repetition,
augmentation and batching belong to the input pipeline.
"""

from tf_simclr.data.image_folder import ImageFolderSource
from tf_simclr.data.source import (
    IMAGE_FOLDER,
    UNLABELED,
    UNLABELED_SPLIT_NAMES,
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
from tf_simclr.data.tfds import TfdsSource, tfds_builder

__all__ = ["IMAGE_FOLDER", "UNLABELED", "UNLABELED_SPLIT_NAMES", "DataError", "DatasetInfo",
           "ImageFolderSource", "ImageSource", "TfdsSource", "build_source", "check_directory",
           "decode_rgb", "is_unlabeled_split", "pipeline_shard", "split_names",
           "stratified_subset", "tfds_builder"]


def build_source(data_config, seed=0, hide_labels=False):
    """The ImageSource that data_config names (dataset, data_dir, splits, ...).

    Args:
      data_config: config.DataConfig.
      seed: chooses the label_fraction subset (config.train.seed).
      hide_labels: with label_fraction < 1, keep every train image and give the ones
        outside the labelled subset the label UNLABELED (distillation reads them all),
        instead of reading the subset only.

    Returns:
      An ImageSource whose `info` describes data_config.train_split/eval_split.

    Raises:
      DataError: the data is missing, unprepared, empty or malformed.
    """
    if data_config.dataset == IMAGE_FOLDER:
        return ImageFolderSource(data_config, seed, hide_labels)
    return TfdsSource(tfds_builder(data_config), data_config, seed, hide_labels)
