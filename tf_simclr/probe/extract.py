"""Features of whole splits, extracted once under a tf.distribute strategy and cached.

Each split is read with the eval preprocessing (center crop above 32 px, no
augmentation), padded to whole global batches with a mask as in evaluation, and
encoded by every replica in inference mode; the masked rows are dropped, so the
features come out in the split's order, each example once.
"""

import math
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tf_simclr import input_pipeline
from tf_simclr.probe import feature_store
from tf_simclr.train import progress as progress_lib

LOG_EVERY_SECONDS = 10.0


class Extractor:
    """Encodes splits with `encode(images) -> features` in every replica of `strategy`.

    Build it once per encoder: its step function is traced once and reused for
    every split (the kNN monitor extracts again every few epochs).
    """

    def __init__(self, encode, strategy):
        self._strategy = strategy

        def replica(batch):
            return {"features": tf.cast(encode(batch["image"]), tf.float32),
                    "label": batch["label"], "mask": batch["mask"]}

        @tf.function
        def step(batch):
            outputs = strategy.run(replica, args=(batch,))
            return {k: tf.concat(strategy.experimental_local_results(v), 0)
                    for k, v in outputs.items()}

        self._step = step

    def batches(self, source, config, split, num_examples, limit=None, log=True):
        """Yields (features float32 [b, D], labels int32 [b]) over `split` in order;
        `limit` stops after that many examples (the first ones of the split)."""
        wanted = num_examples if limit is None else min(limit, num_examples)
        batch = config.train.eval_batch_size
        num_steps = max(1, math.ceil(wanted / batch))
        dataset = input_pipeline.distributed_eval_dataset(
            self._strategy, source, config, num_steps, split)
        progress = progress_lib.Progress(f"features {split}", num_steps, batch, 0)
        last_log, seen = time.monotonic(), 0
        for index, element in enumerate(dataset):
            out = self._step(element)
            keep = out["mask"].numpy() > 0
            features, labels = out["features"].numpy()[keep], out["label"].numpy()[keep]
            features, labels = features[:wanted - seen], labels[:wanted - seen]
            seen += len(features)
            line, _ = progress.update(index + 1, {"examples": seen})
            if log and (time.monotonic() - last_log > LOG_EVERY_SECONDS
                        or index + 1 == num_steps):
                logging.info("%s", line)
                last_log = time.monotonic()
            yield features, labels
            if seen >= wanted:
                break

    def arrays(self, source, config, split, num_examples, limit=None):
        """(features float32 [n, D], labels int32 [n]) of `batches` in memory."""
        features, labels = zip(*self.batches(source, config, split, num_examples, limit,
                                             log=False))
        return np.concatenate(features), np.concatenate(labels)


def cached_features(encoder, extractor, source, config, split, num_examples, directory):
    """The FeatureStore of `encoder` on `split` in `directory`, extracted if missing.

    `extractor()` returns the encoder's Extractor; it is called only when features
    must be extracted (the caller memoises it, so the weights load once per encoder).
    """
    key = (f"{encoder.key} | split {split_label(config, split)} | {config.data.dataset} | "
           f"{config.data.data_dir}")
    store = feature_store.open_store(directory, key)
    if store is not None:
        logging.info("features of %s on %s: cached in %s", encoder.name, split, directory)
        return store
    store = feature_store.write_store(
        directory, key, extractor().batches(source, config, split, num_examples))
    logging.info("features of %s on %s: %d x %d in %.1f s -> %s", encoder.name, split,
                 store.num_examples, store.dim, store.manifest["seconds"], directory)
    return store


def split_label(config, split):
    """`split` as its features are cached: with --label_fraction < 1 the train split
    is a stratified subset, named by its fraction and seed so that it never shares a
    cache with the whole split or with another subset."""
    if split != config.data.train_split or config.data.label_fraction >= 1:
        return split
    return f"{split}@label_fraction={config.data.label_fraction:g},seed={config.train.seed}"


def store_directory(output_dir, encoder, config, split):
    label = split_label(config, split)
    safe = "".join(c if c.isalnum() or c in "-_.=," else "_" for c in label)
    return os.path.join(output_dir, "features", encoder.name, safe)
