"""Contrastive-task metrics from the logits and labels of `losses.nt_xent_loss`.

As official (`tf2/metrics.py`): both use only the cross-view logits logits_ab, so
same-view negatives are not counted. Values are local-batch means; the loop
averages them over replicas and steps (e.g. with keras.metrics.Mean).
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
