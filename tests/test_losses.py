"""NT-Xent, supervised loss and contrastive metrics against NumPy references.

The references below are written from the paper's definition (log-sum-exp over the
2N - 2 negatives and the positive, self excluded), not by calling tf_simclr.
"""

import numpy as np
import pytest
import tensorflow as tf

from tf_simclr.train import losses, metrics


def numpy_nt_xent(z1, z2, temperature, normalize):
    """(loss, logits_ab [N, N], labels [N, 2N]) on one device, in float64."""
    z1 = np.asarray(z1, np.float64)
    z2 = np.asarray(z2, np.float64)
    if normalize:
        z1 = z1 / np.maximum(np.linalg.norm(z1, axis=1, keepdims=True), 1e-12)
        z2 = z2 / np.maximum(np.linalg.norm(z2, axis=1, keepdims=True), 1e-12)
    n = len(z1)

    def anchor_loss(anchor, same_view, other_view, i):
        # Candidates: all other-view rows and every same-view row except i itself.
        candidates = [anchor @ other_view[j] / temperature for j in range(n)]
        candidates += [anchor @ same_view[j] / temperature for j in range(n) if j != i]
        candidates = np.array(candidates)
        top = candidates.max()
        log_sum_exp = top + np.log(np.exp(candidates - top).sum())
        return log_sum_exp - anchor @ other_view[i] / temperature

    total = sum(anchor_loss(z1[i], z1, z2, i) + anchor_loss(z2[i], z2, z1, i)
                for i in range(n))
    logits_ab = z1 @ z2.T / temperature
    labels = np.zeros((n, 2 * n))
    labels[np.arange(n), np.arange(n)] = 1.0
    return total / n, logits_ab, labels


@pytest.mark.parametrize("temperature, normalize, batch, dim", [
    (0.1, True, 8, 16),
    (0.5, True, 5, 3),
    (1.0, True, 7, 128),
    (0.2, False, 6, 32),
    (1.0, False, 4, 2),
    (0.5, True, 1, 4),      # B = 1: no negatives but the masked self, loss ~ 0
    (0.07, False, 1, 8),
])
def test_nt_xent_matches_numpy(temperature, normalize, batch, dim):
    rng = np.random.default_rng(batch * 100 + dim)
    scale = 1.0 if normalize else 0.3
    z1 = (scale * rng.standard_normal((batch, dim))).astype(np.float32)
    z2 = (z1 + 0.5 * scale * rng.standard_normal((batch, dim))).astype(np.float32)
    loss, logits, labels = losses.nt_xent_loss(z1, z2, temperature, normalize=normalize)
    want_loss, want_logits, want_labels = numpy_nt_xent(z1, z2, temperature, normalize)
    assert loss.dtype == tf.float32 and loss.shape == ()
    np.testing.assert_allclose(loss.numpy(), want_loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(logits.numpy(), want_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), want_labels)


def test_nt_xent_is_sum_of_both_directions_at_init():
    # Identical embeddings make every unmasked logit equal: each direction is
    # ln(2N - 1), and the official loss is their sum.
    z = np.ones((6, 5), np.float32)
    loss, _, _ = losses.nt_xent_loss(z, z, 0.1)
    np.testing.assert_allclose(loss.numpy(), 2 * np.log(2 * 6 - 1), rtol=1e-6)


def test_swapping_views_keeps_loss_and_transposes_logits():
    # Swapping the views swaps the two directions, so the loss is unchanged, but
    # the returned logits are logits_ab (z1 against z2), i.e. transposed.
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 5, 8)).astype(np.float32)
    loss_12, logits_12, _ = losses.nt_xent_loss(z1, z2, 0.3)
    loss_21, logits_21, _ = losses.nt_xent_loss(z2, z1, 0.3)
    np.testing.assert_allclose(loss_12.numpy(), loss_21.numpy(), rtol=1e-6)
    np.testing.assert_allclose(logits_12.numpy(), logits_21.numpy().T, rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_nt_xent_mixed_precision_is_float32(dtype):
    rng = np.random.default_rng(1)
    z1 = tf.cast(rng.standard_normal((6, 16)), dtype)
    z2 = tf.cast(rng.standard_normal((6, 16)), dtype)
    loss, logits, labels = losses.nt_xent_loss(z1, z2, 0.1)
    want_loss, want_logits, _ = losses.nt_xent_loss(
        tf.cast(z1, tf.float32), tf.cast(z2, tf.float32), 0.1)
    assert loss.dtype == logits.dtype == labels.dtype == tf.float32
    np.testing.assert_array_equal(loss.numpy(), want_loss.numpy())
    np.testing.assert_array_equal(logits.numpy(), want_logits.numpy())
    # And the gradient reaches the half-precision input in its own dtype.
    with tf.GradientTape() as tape:
        tape.watch(z1)
        half_loss = losses.nt_xent_loss(z1, z2, 0.1)[0]
    grad = tape.gradient(half_loss, z1)
    assert grad.dtype == dtype and np.all(np.isfinite(tf.cast(grad, tf.float32)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(z1=np.ones((2, 3)), z2=np.ones((2, 3)), temperature=0.0), "temperature=0.0"),
    (dict(z1=np.ones((2, 3)), z2=np.ones((2, 3)), temperature=-1), "temperature=-1"),
    (dict(z1=np.ones((2, 3)), z2=np.ones((3, 3)), temperature=0.1), r"\(3, 3\)"),
    (dict(z1=np.ones((2, 3, 1)), z2=np.ones((2, 3, 1)), temperature=0.1), "B_local, d"),
    (dict(z1=np.ones((2, 3), np.int32), z2=np.ones((2, 3), np.int32), temperature=0.1),
     "int32"),
])
def test_nt_xent_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        losses.nt_xent_loss(**kwargs)


def numpy_softmax_ce(labels, logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -(labels * log_probs).sum(axis=1)


def test_supervised_loss_matches_numpy():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((7, 5)).astype(np.float32) * 3
    labels = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 7)]
    per_example = numpy_softmax_ce(labels, logits.astype(np.float64))

    got = losses.supervised_loss(labels, logits)
    np.testing.assert_allclose(got.numpy(), per_example.mean(), rtol=1e-5)

    mask = np.array([1, 1, 0, 1, 0, 0, 1], np.float32)   # padded eval batch
    got = losses.supervised_loss(labels, logits, weights=mask)
    np.testing.assert_allclose(got.numpy(), per_example[mask == 1].mean(), rtol=1e-5)

    weights = np.array([2, 0.5, 0, 1, 0, 0, 3], np.float32)
    got = losses.supervised_loss(labels, logits, weights=weights)
    np.testing.assert_allclose(got.numpy(), (weights * per_example).sum() / 4, rtol=1e-5)

    got = losses.supervised_loss(labels, logits, weights=np.zeros(7, np.float32))
    assert got.numpy() == 0.0


def test_supervised_loss_with_class_ids():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((6, 4)).astype(np.float32) * 2
    ids = rng.integers(0, 4, 6)
    per_example = numpy_softmax_ce(np.eye(4)[ids], logits.astype(np.float64))
    np.testing.assert_allclose(losses.supervised_loss(ids, logits).numpy(),
                               per_example.mean(), rtol=1e-5)
    # Unlabelled rows carry id -1 and weight 0; their ids are never read.
    mask = np.array([1, 0, 1, 1, 0, 1], np.float32)
    ids_with_placeholders = np.where(mask == 1, ids, -1).astype(np.int32)
    got = losses.supervised_loss(ids_with_placeholders, logits, weights=mask)
    np.testing.assert_allclose(got.numpy(), per_example[mask == 1].mean(), rtol=1e-5)


def test_supervised_loss_is_float32_for_half_logits():
    logits = tf.constant([[1.0, 2.0, 0.5]], tf.bfloat16)
    got = losses.supervised_loss([[0.0, 1.0, 0.0]], logits)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(
        got.numpy(), numpy_softmax_ce(np.array([[0, 1.0, 0]]), np.array([[1, 2, 0.5]]))[0],
        rtol=1e-6)


def test_supervised_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="num_classes"):
        losses.supervised_loss(np.ones((4, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="class ids"):
        losses.supervised_loss(np.ones((5,), np.int32), np.ones((4, 5)))
    with pytest.raises(ValueError, match="weights have shape"):
        losses.supervised_loss(np.ones((4, 3)), np.ones((4, 3)), weights=np.ones(5))


def test_contrastive_metrics_match_numpy():
    rng = np.random.default_rng(3)
    n = 6
    logits = rng.standard_normal((n, n)).astype(np.float32)
    logits[[0, 2, 3], [0, 2, 3]] += 10.0          # rows 0, 2, 3 rank the positive first
    logits[1, 4] = logits[1].max() + 1.0          # row 1 wrong even if it was right
    labels = np.zeros((n, 2 * n), np.float32)
    labels[np.arange(n), np.arange(n)] = 1.0

    want_acc = np.mean(np.argmax(labels, 1) == np.argmax(logits, 1))
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    want_entropy = -np.mean(np.sum(probs * np.log(probs + 1e-8), axis=1))

    np.testing.assert_allclose(metrics.contrastive_accuracy(logits, labels).numpy(),
                               want_acc)
    assert want_acc in (3 / 6, 4 / 6, 5 / 6)      # the fixture is not trivially 0 or 1
    np.testing.assert_allclose(metrics.contrastive_entropy(logits).numpy(), want_entropy,
                               rtol=1e-5)


def test_masked_accuracy_matches_numpy():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((8, 3)).astype(np.float32)
    ids = rng.integers(0, 3, 8)
    hits = (np.argmax(logits, 1) == ids).astype(np.float64)
    assert 0 < hits.mean() < 1
    np.testing.assert_allclose(metrics.masked_accuracy(ids, logits).numpy(), hits.mean())
    np.testing.assert_allclose(
        metrics.masked_accuracy(np.eye(3)[ids], logits).numpy(), hits.mean())
    weights = np.array([1, 0, 2, 1, 0, 1, 1, 0.5], np.float32)
    ids_with_placeholders = np.where(weights > 0, ids, -1)
    np.testing.assert_allclose(
        metrics.masked_accuracy(ids_with_placeholders, logits, weights).numpy(),
        (weights * hits).sum() / weights.sum(), rtol=1e-6)
    assert metrics.masked_accuracy(ids, logits, np.zeros(8)).numpy() == 0.0


def test_contrastive_metrics_on_loss_outputs():
    # Uniform logits: entropy ln(N). Nearly identical views: accuracy 1.
    z = np.ones((5, 4), np.float32)
    _, logits, _ = losses.nt_xent_loss(z, z, 0.1)
    np.testing.assert_allclose(metrics.contrastive_entropy(logits).numpy(), np.log(5),
                               rtol=1e-5)
    z1 = np.eye(5, 8, dtype=np.float32)
    _, logits, labels = losses.nt_xent_loss(z1, z1 + 0.01, 0.1)
    assert metrics.contrastive_accuracy(logits, labels).numpy() == 1.0
