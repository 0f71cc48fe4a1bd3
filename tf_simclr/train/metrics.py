"""Per-batch metrics: the contrastive task's, and a masked supervised accuracy.

As official (`tf2/metrics.py`): the contrastive metrics use only the cross-view
logits logits_ab of `losses.nt_xent_loss`, so same-view negatives are not counted.
Values are local-batch means; the loop averages them over replicas and steps.
"""

import tensorflow as tf


def contrastive_accuracy(logits, labels):
    """Top-1 accuracy of the positive among the cross-view logits.

    Args:
        logits: [B, N] cross-view logits (logits_ab).
        labels: [B, 2N] one-hot labels from nt_xent_loss; the positive's column is
            < N, so argmax(labels) indexes logits directly.

    Returns:
        float32 scalar, mean(argmax(labels) == argmax(logits)).
    """
    hits = tf.equal(tf.argmax(labels, axis=1), tf.argmax(logits, axis=1))
    return tf.reduce_mean(tf.cast(hits, tf.float32))


def contrastive_entropy(logits):
    """Mean entropy of softmax(logits) per anchor, -mean(sum(p * log(p + 1e-8))).

    Args:
        logits: [B, N] cross-view logits (logits_ab).

    Returns:
        float32 scalar; ln(N) for uniform logits, near 0 for confident ones.
    """
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(probs * tf.math.log(probs + 1e-8), axis=-1))


def masked_accuracy(labels, logits, weights=None):
    """Top-1 accuracy of a classifier, weighted per example (float32 scalar).

    Args:
        labels: [B] integer class ids, or [B, C] one-hot labels.
        logits: [B, C] class scores.
        weights: optional [B] weights, e.g. 0 for padded or unlabelled examples
            (whose class ids are then ignored).

    Returns:
        sum(w * hit) / sum(w), with hit = (argmax(logits) == label); 0 if all
        weights are 0. Without weights, the plain mean.
    """
    labels = tf.convert_to_tensor(labels)
    labels = (tf.cast(labels, tf.int64) if labels.dtype.is_integer
              else tf.argmax(labels, axis=1))
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=1), labels), tf.float32)
    if weights is None:
        return tf.reduce_mean(hits)
    weights = tf.cast(weights, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(weights * hits), tf.reduce_sum(weights))
