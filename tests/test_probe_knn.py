"""Weighted kNN (tf_simclr.probe.knn) against a NumPy reference, exactly."""

import numpy as np
import pytest

from tf_simclr.probe import knn


def _numpy_knn(bank, bank_labels, queries, num_classes, k, temperature):
    """Reference: full cosine matrix, stable ranking, exp(s/T) votes -> votes [Q, C]."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    similarity = queries @ bank.T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros([len(queries), num_classes])
    for q in range(len(queries)):
        for j in order[q]:
            votes[q, bank_labels[j]] += np.exp(similarity[q, j] / temperature)
    return votes


def _clustered(num_bank, num_queries, num_classes, dim, rng, spread=1.0):
    """(bank, bank labels, queries, query labels) around the same class centres."""
    centres = rng.normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, num_bank + num_queries)
    points = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    return (points[:num_bank], labels[:num_bank], points[num_bank:], labels[num_bank:])


@pytest.mark.parametrize("bank_chunk_rows", [4096, 97])
@pytest.mark.parametrize("setting", [knn.KnnSetting(200, 0.1), knn.KnnSetting(20, 0.07),
                                     knn.KnnSetting(1, 0.1)])
def test_votes_and_accuracy_equal_a_numpy_reference(setting, bank_chunk_rows):
    rng = np.random.default_rng(0)
    bank, bank_labels, queries, query_labels = _clustered(1000, 300, 7, 16, rng)
    chunks = lambda: ((s, bank[s:s + bank_chunk_rows])  # noqa: E731
                      for s in range(0, len(bank), bank_chunk_rows))
    similarity, index = knn.nearest_neighbours(chunks, queries, setting.k,
                                               query_chunk_rows=128)
    votes = knn.class_votes(similarity, bank_labels[index], 7, setting.temperature)
    expected = _numpy_knn(bank, bank_labels, queries, 7, setting.k, setting.temperature)
    np.testing.assert_allclose(votes, expected, rtol=1e-9)
    assert np.array_equal(np.argmax(votes, 1), np.argmax(expected, 1))
    result = knn.evaluate(bank, bank_labels, queries, query_labels, 7, (setting,))
    reference = float(np.mean(np.argmax(expected, 1) == query_labels))
    assert result[f"{setting.name}_top1"] == reference
    assert 0.3 < reference < 1.0  # neither trivial nor chance


def test_equal_similarities_keep_the_bank_order():
    bank = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    similarity, index = knn.nearest_neighbours(bank, np.array([[1.0, 0.0]]), 3,
                                               bank_chunk_rows=2)
    assert index.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(similarity, 1.0)


def test_float32_features_classify_like_float64():
    rng = np.random.default_rng(1)
    bank, bank_labels, queries, query_labels = _clustered(800, 200, 5, 32, rng)
    high = knn.evaluate(bank, bank_labels, queries, query_labels, 5)
    low = knn.evaluate(bank.astype(np.float32), bank_labels, queries.astype(np.float32),
                       query_labels, 5)
    assert high == low


def test_top_k_accuracy_counts_labels_among_the_highest_scores():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    labels = np.array([2, 0, 1])  # the last one ties with class 0 and loses the tie
    assert knn.top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert knn.top_k_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert knn.top_k_accuracy(scores, labels, 5) == 1.0


def test_knn_probe_merges_copied_columns_without_changing_the_neighbours(tmp_path):
    """Grayscale pixels tiled to RGB: the probe's kNN on three equal columns per
    pixel (searched on one column x sqrt(3)) equals NumPy's on the full features."""
    from tf_simclr.probe import feature_store, protocol
    rng = np.random.default_rng(3)
    bank, bank_labels, queries, query_labels = _clustered(600, 200, 5, 8, rng)
    tripled = [np.repeat(x, 3, axis=1).astype(np.float32) for x in (bank, queries)]
    train, test = (feature_store.write_store(str(tmp_path / name), name, [(x, labels)])
                   for name, x, labels in (("train", tripled[0], bank_labels),
                                           ("test", tripled[1], query_labels)))
    assert len(protocol.DistinctColumns(train).keep) == 8
    result = protocol.knn_probe(train, test, 5)
    for setting in knn.SETTINGS:
        expected = _numpy_knn(tripled[0].astype(np.float64), bank_labels,
                              tripled[1].astype(np.float64), 5, setting.k, setting.temperature)
        assert result[f"{setting.name}_top1"] == float(
            np.mean(np.argmax(expected, 1) == query_labels))
