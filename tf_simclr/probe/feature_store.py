"""Features of one split on disk: float32 shards, their labels, and a manifest.

Layout of a store directory:

    manifest.json        {"key", "num_examples", "dim", "shards": [{"features",
                          "labels", "rows"}], "seconds"}; written last
    features-00000.npy   float32 [rows, dim] (shard_rows rows; the last one fewer)
    labels-00000.npy     int32 [rows]

The manifest is written (atomically) only after every shard, so a killed
extraction leaves no store that claims to be complete; `open_store` gives None for
a missing store or one made from another source (`key` differs), and the caller
extracts again. Shards are read memory-mapped, so a store larger than memory is
read a shard at a time.
"""

import json
import os
import shutil
import time

import numpy as np

from tf_simclr import config as config_lib

MANIFEST = "manifest.json"
DEFAULT_SHARD_ROWS = 65536


class FeatureStore:
    """A complete store: `dim`, `num_examples`, `labels` int32 [N], shard access."""

    def __init__(self, directory, manifest):
        self.directory = directory
        self.manifest = manifest
        self.dim = manifest["dim"]
        self.num_examples = manifest["num_examples"]
        self.labels = np.concatenate(
            [np.load(os.path.join(directory, s["labels"])) for s in manifest["shards"]]
            or [np.zeros([0], np.int32)])

    @property
    def nbytes(self):
        return 4 * self.dim * self.num_examples

    def chunks(self):
        """Yields (first row, float32 [rows, dim]) per shard, memory-mapped."""
        start = 0
        for shard in self.manifest["shards"]:
            yield start, np.load(os.path.join(self.directory, shard["features"]), mmap_mode="r")
            start += shard["rows"]

    def features(self):
        """float32 [N, dim] in memory."""
        return np.concatenate([np.asarray(x) for _, x in self.chunks()]
                              or [np.zeros([0, self.dim], np.float32)])


def open_store(directory, key):
    """The complete store in `directory` made from `key`, else None."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("key") != key:
        return None
    return FeatureStore(directory, manifest)


def write_store(directory, key, batches, shard_rows=DEFAULT_SHARD_ROWS):
    """Streams (features float [b, D], labels int [b]) batches into a new store.

    Whatever `directory` held is replaced. Returns the FeatureStore; its manifest
    records the seconds the batches took to arrive (the extraction).
    """
    started = time.time()
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    shards, pending, pending_labels, dim = [], [], [], None

    def flush(rows):
        """Writes the first `rows` pending rows as the next shard."""
        features = np.concatenate(pending).astype(np.float32)
        labels = np.concatenate(pending_labels).astype(np.int32)
        index = len(shards)
        names = {"features": f"features-{index:05d}.npy", "labels": f"labels-{index:05d}.npy"}
        np.save(os.path.join(directory, names["features"]), features[:rows])
        np.save(os.path.join(directory, names["labels"]), labels[:rows])
        shards.append({**names, "rows": rows})
        pending[:], pending_labels[:] = [features[rows:]], [labels[rows:]]

    total = 0
    for features, labels in batches:
        features = np.asarray(features)
        dim = features.shape[1]
        pending.append(features)
        pending_labels.append(np.asarray(labels))
        total += len(features)
        while sum(len(p) for p in pending) >= shard_rows:
            flush(shard_rows)
    left = sum(len(p) for p in pending)
    if left:
        flush(left)
    manifest = {"key": key, "num_examples": total, "dim": dim, "shards": shards,
                "seconds": time.time() - started}
    config_lib.write_atomically(os.path.join(directory, MANIFEST), json.dumps(manifest, indent=2))
    return FeatureStore(directory, manifest)
