"""The probe: a converged linear classifier and kNN on frozen features, per encoder.

For each encoder: features of the train and eval splits (cached, `extract`), then

- linear: features standardised with the train split's mean and standard deviation
  (label-free statistics); the L2 strength is chosen from a log-spaced grid on a
  seeded held-out part of the train split (`probe_holdout_fraction`), the
  classifier is refitted on the whole train split with it (`logistic`), and scored
  on the eval split. The eval split never takes part in the choice.
- kNN: cosine similarity on the raw features, weighted votes (`knn`).

`probe(...)` returns one row per encoder and writes `probe_result.json` (the first
encoder's row at the top level, every row under "rows") and `probe_table.md`.
"""

import functools
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tf_simclr import config as config_lib
from tf_simclr import data
from tf_simclr.probe import extract, knn, logistic, neighbours

RESULT_FILENAME = "probe_result.json"
TABLE_FILENAME = "probe_table.md"
# Features up to this size stay in memory (as tensors) during the fit; larger ones
# are read from their shards at every L-BFGS evaluation.
IN_MEMORY_BYTES = 4 << 30
BATCH_ROWS = 131072
# neighbours.png decodes the train split once to find the neighbours' images.
NEIGHBOURS_MAX_TRAIN_EXAMPLES = 250_000
_HOLDOUT_SEED_OFFSET = 104729


class DistinctColumns:
    """x [n, D] -> x[:, keep] * sqrt(copies): float32 [n, K], exact copies merged.

    Dot products and norms, hence cosine similarities, are those of the full
    features (k equal columns contribute k x_i y_i, as one column sqrt(k) x_i
    does), so kNN gives the same neighbours at 1/k of the cost: a third for
    grayscale pixels tiled to RGB.
    """

    def __init__(self, store, sample_rows=4096):
        self.keep, self.copies = _distinct_columns(store, np.arange(store.dim), sample_rows)
        self.weight = np.sqrt(self.copies).astype(np.float32)

    def __call__(self, x):
        return np.asarray(x)[:, self.keep] * self.weight


class Standardiser:
    """x [n, D] -> ((x - mean) / scale)[:, keep] * weight: float32 [n, K].

    Fitted on the train store (label-free statistics). Constant features are
    dropped. Features that are exact copies of another (e.g. the three channels
    of grayscale pixels) are merged into one column scaled by sqrt(copies): that
    leaves the L2-regularised problem and its predictions unchanged (k equal
    columns share their weight w at the optimum, and k w^2 = (sqrt(k) w)^2) and
    makes the fit k times cheaper. `columns`: the store's DistinctColumns, when
    already found (the kNN probe uses the same).
    """

    def __init__(self, store, columns=None):
        total = np.zeros(store.dim)
        total_sq = np.zeros(store.dim)
        low = np.full(store.dim, np.inf)
        high = np.full(store.dim, -np.inf)
        for _, chunk in store.chunks():
            chunk = np.asarray(chunk, np.float64)
            total += chunk.sum(0)
            total_sq += (chunk * chunk).sum(0)
            low, high = np.minimum(low, chunk.min(0)), np.maximum(high, chunk.max(0))
        mean = total / store.num_examples
        scale = np.sqrt(np.maximum(total_sq / store.num_examples - mean * mean, 0.0))
        varying = (high > low) & (scale > 0)
        # A copy of a varying column varies too: the distinct columns' groups, less
        # the constant ones.
        if columns is None:
            columns = DistinctColumns(store)
        distinct_varying = varying[columns.keep]
        keep, copies = columns.keep[distinct_varying], columns.copies[distinct_varying]
        self.keep = keep
        self.mean = mean[keep].astype(np.float32)
        self.scale = (scale[keep] / np.sqrt(copies)).astype(np.float32)
        self.dim = len(keep)

    def __call__(self, x):
        return (np.asarray(x)[:, self.keep] - self.mean) / self.scale


def _distinct_columns(store, candidates, sample_rows):
    """(kept column indices [K], copies of each [K]) among `candidates`: a column
    equal to an earlier one on every row of the store counts as its copy."""
    _, first = next(store.chunks())
    sample = np.asarray(first[:sample_rows])
    groups = {}
    for column in candidates:
        groups.setdefault(sample[:, column].tobytes(), []).append(int(column))
    merged = [members for members in groups.values() if len(members) > 1]
    for _, chunk in store.chunks():
        regrouped = []
        for members in merged:
            block = np.asarray(chunk[:, members])
            same = np.all(block == block[:, :1], axis=0)
            regrouped.append([m for m, ok in zip(members, same) if ok])
            regrouped += [[m] for m, ok in zip(members, same) if not ok]
        merged = [members for members in regrouped if len(members) > 1]
    copy_of = {m: members[0] for members in merged for m in members[1:]}
    keep = [int(c) for c in candidates if int(c) not in copy_of]
    counts = dict.fromkeys(keep, 1)
    for representative in copy_of.values():
        counts[representative] += 1
    return np.asarray(keep, np.int64), np.asarray([counts[c] for c in keep], np.float64)


class RowBatches:
    """Standardised (x float32 [n, K], labels int32 [n]) batches of a FeatureStore.

    Called, it returns an iterable over its rows in batches of at most
    `batch_rows`: tensors kept in memory when the store fits `in_memory_bytes`,
    else read from the store's shards at every call. `subset(rows)` gives the
    batches of some rows; from batches in memory it masks them rather than reading
    and standardising the store again.
    """

    def __init__(self, store, standardiser, batch_rows=BATCH_ROWS,
                 in_memory_bytes=IN_MEMORY_BYTES, rows=None, cached=None):
        self._store, self._standardiser = store, standardiser
        self._batch_rows, self._in_memory_bytes = batch_rows, in_memory_bytes
        self._rows = rows  # bool [N] of the store's rows included, None: all
        self.labels = store.labels if rows is None else store.labels[rows]
        self.count = len(self.labels)
        if cached is None and store.nbytes <= in_memory_bytes:
            cached = list(self._read())
        self._cached = cached

    def subset(self, rows):
        """The batches of the rows where `rows` (bool [N], over all of this one's) is set."""
        if self._rows is not None:
            raise ValueError("subset() of a subset; expected it of the whole store's batches")
        cached = None
        if self._cached is not None:
            cached, start = [], 0
            for x, labels in self._cached:
                keep = tf.constant(rows[start:start + len(labels)])
                start += len(labels)
                cached.append((tf.boolean_mask(x, keep), tf.boolean_mask(labels, keep)))
        return RowBatches(self._store, self._standardiser, self._batch_rows,
                          self._in_memory_bytes, rows=rows, cached=cached)

    def _read(self):
        for start, chunk in self._store.chunks():
            labels = self._store.labels[start:start + len(chunk)]
            if self._rows is not None:
                keep = self._rows[start:start + len(chunk)]
                chunk, labels = chunk[keep], labels[keep]
            for offset in range(0, len(chunk), self._batch_rows):
                x = self._standardiser(chunk[offset:offset + self._batch_rows])
                yield (tf.constant(x, tf.float32),
                       tf.constant(labels[offset:offset + self._batch_rows], tf.int32))

    def __call__(self):
        return self._cached if self._cached is not None else self._read()


def holdout_rows(num_examples, fraction, seed):
    """bool [N]: a seeded random `fraction` of the rows (at least one)."""
    count = max(1, int(round(fraction * num_examples)))
    mask = np.zeros(num_examples, bool)
    rng = np.random.default_rng(seed + _HOLDOUT_SEED_OFFSET)
    mask[rng.choice(num_examples, size=count, replace=False)] = True
    return mask


def check_labelled(source, config):
    """DataError unless the source has classes and neither split is an unlabeled one."""
    info = source.info
    if info.num_classes == 0:
        raise data.DataError(f"{info.name} has no labels; the probe needs a labelled train "
                             "and eval split (expected a labelled dataset or an image "
                             "folder with class sub-folders).")
    for flag in ("train_split", "eval_split"):
        split = getattr(config.data, flag)
        if data.is_unlabeled_split(split):
            raise data.DataError(f"--{flag}={split!r} of {info.name} has no labels; the probe "
                                 "needs labelled splits (expected e.g. train and test).")


def _check_labels(store, split, dataset):
    unlabeled = int(np.sum(store.labels < 0))
    if unlabeled or store.num_examples == 0:
        raise data.DataError(
            f"split {split!r} of {dataset} has {unlabeled} unlabeled of "
            f"{store.num_examples} examples; the probe needs every example labelled "
            "(expected a labelled --train_split and --eval_split).")


def linear_probe(train, test, num_classes, probe_config, seed, columns=None):
    """Fits and scores the logistic-regression probe; returns its result fields.
    `columns`: the train store's DistinctColumns, when already found."""
    started = time.time()
    standardiser = Standardiser(train, columns)
    holdout = holdout_rows(train.num_examples, probe_config.probe_holdout_fraction, seed)
    all_rows = RowBatches(train, standardiser)
    options = logistic.SolverOptions(max_iterations=probe_config.probe_max_iterations,
                                     curvature_scale=probe_config.probe_curvature_scale)
    grid = logistic.l2_grid(probe_config.probe_l2_min, probe_config.probe_l2_max,
                            probe_config.probe_l2_steps)
    classifier, selection = logistic.select_and_refit(
        all_rows.subset(~holdout), all_rows.subset(holdout), all_rows, standardiser.dim,
        num_classes, grid, options=options, patience=probe_config.probe_patience)
    logits = classifier.logits(RowBatches(test, standardiser)())
    return {
        "linear_top1": knn.top_k_accuracy(logits, test.labels, 1),
        "linear_top5": knn.top_k_accuracy(logits, test.labels, 5),
        "l2": selection["l2"],
        "l2_grid": [{k: v for k, v in entry.items() if k != "seconds"}
                    for entry in selection["grid"]],
        "refit_iterations": selection["refit"]["iterations"],
        "refit_converged": selection["refit"]["converged"],
        "num_holdout_examples": int(holdout.sum()),
        "probe_dim": standardiser.dim,
        "linear_seconds": time.time() - started,
    }


def knn_probe(train, test, num_classes, settings=knn.SETTINGS, columns=None):
    started = time.time()
    if columns is None:
        columns = DistinctColumns(train)

    def bank_chunks():
        for start, chunk in train.chunks():
            yield start, columns(chunk)
    result = knn.evaluate(bank_chunks, train.labels, columns(test.features()), test.labels,
                          num_classes, settings)
    result["knn_seconds"] = time.time() - started
    return result


def probe_encoder(encoder, strategy, source, config, output_dir, neighbours_png=None):
    """The probe row of one encoder (features cached under output_dir/features);
    with `neighbours_png`, also that picture of its nearest neighbours. The source
    must be labelled (`check_labelled`; `probe` checks it)."""
    info = source.info
    splits = {"train": (config.data.train_split, info.num_train_examples),
              "test": (config.data.eval_split, info.num_eval_examples)}

    @functools.cache
    def extractor():
        with strategy.scope():
            return extract.Extractor(encoder.build(), strategy)

    stores = {}
    for role, (split, count) in splits.items():
        if count == 0:
            raise data.DataError(f"split {split!r} of {info.name} is empty; the probe needs "
                                 "examples in --train_split and --eval_split.")
        stores[role] = extract.cached_features(
            encoder, extractor, source, config, split, count,
            extract.store_directory(output_dir, encoder, config, split))
        _check_labels(stores[role], split, info.name)
    train, test = stores["train"], stores["test"]
    row = {"encoder": encoder.name, "source": encoder.key, "feature_dim": train.dim,
           "num_train_examples": train.num_examples, "num_test_examples": test.num_examples,
           "train_split": config.data.train_split, "eval_split": config.data.eval_split,
           "features_seconds": sum(s.manifest["seconds"] or 0.0 for s in stores.values())}
    # One pass over the train features finds the copied columns for both probes.
    columns = DistinctColumns(train)
    row.update(linear_probe(train, test, info.num_classes, config.probe, config.train.seed,
                            columns))
    row.update(knn_probe(train, test, info.num_classes, columns=columns))
    if neighbours_png:
        if train.num_examples > NEIGHBOURS_MAX_TRAIN_EXAMPLES:
            logging.info("%s skipped: it decodes the whole train split (%d > %d examples)",
                         neighbours_png, train.num_examples, NEIGHBOURS_MAX_TRAIN_EXAMPLES)
        else:
            shown = neighbours.write(neighbours_png, source, config, train, test)
            row["neighbours_png"] = neighbours_png
            row["neighbours_same_label_fraction"] = shown["same_label_fraction"]
    logging.info("%s", summary_line(row))
    return row


def summary_line(row):
    return (f"probe {row['encoder']}: linear top-1 {100 * row['linear_top1']:.2f}% "
            f"(top-5 {100 * row['linear_top5']:.2f}%, l2 {row['l2']:.3g}), kNN top-1 "
            f"{100 * row['knn_top1']:.2f}% (k=20: {100 * row['knn20_top1']:.2f}%), "
            f"{row['feature_dim']}-d features of {row['num_train_examples']} train / "
            f"{row['num_test_examples']} test examples")


def markdown_table(rows):
    """The rows as a Markdown table: linear and kNN accuracies per encoder."""
    lines = ["| encoder | dim | linear top-1 | linear top-5 | kNN k=200 top-1 | "
             "kNN k=20 top-1 | L2 chosen |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['encoder']} | {row['feature_dim']} | {100 * row['linear_top1']:.2f}% | "
            f"{100 * row['linear_top5']:.2f}% | {100 * row['knn_top1']:.2f}% | "
            f"{100 * row['knn20_top1']:.2f}% | {row['l2']:.3g} |")
    return "\n".join(lines) + "\n"


def probe(encoders, strategy, source, config, output_dir, neighbours_png=None):
    """Probes every encoder; writes probe_result.json and probe_table.md; returns
    {"rows": {name: row}, **first row}. `neighbours_png`: where to draw the first
    encoder's nearest neighbours (None: nowhere)."""
    check_labelled(source, config)
    os.makedirs(output_dir, exist_ok=True)
    rows = [probe_encoder(encoder, strategy, source, config, output_dir,
                          neighbours_png if i == 0 else None)
            for i, encoder in enumerate(encoders)]
    result = {**rows[0], "rows": {row["encoder"]: row for row in rows}}
    config_lib.write_atomically(os.path.join(output_dir, RESULT_FILENAME),
                                json.dumps(result, indent=2, sort_keys=True))
    table = markdown_table(rows)
    config_lib.write_atomically(os.path.join(output_dir, TABLE_FILENAME), table)
    print(table, end="")
    return result
