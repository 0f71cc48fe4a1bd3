"""The logistic-regression probe (tf_simclr.probe.logistic / protocol) against
scikit-learn's L-BFGS solver, on synthetic and fixed features."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tf_simclr.config import Config
from tf_simclr.probe import feature_store, logistic, protocol


def _store(tmp_path, name, features, labels, shard_rows=feature_store.DEFAULT_SHARD_ROWS):
    return feature_store.write_store(str(tmp_path / name), name,
                                     [(features, labels)], shard_rows=shard_rows)


def _mixture(rng, n, num_classes, dim, spread):
    """Gaussian classes around fixed random centres (the same for every call)."""
    centres = np.random.default_rng(123).normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def _batches(x, labels):
    import tensorflow as tf
    return lambda: [(tf.constant(x, tf.float32), tf.constant(labels, tf.int32))]


def test_separable_features_are_classified_perfectly(tmp_path):
    rng = np.random.default_rng(0)
    train_x, train_y = _mixture(rng, 1500, 4, 8, spread=0.05)
    test_x, test_y = _mixture(rng, 500, 4, 8, spread=0.05)
    config = Config().replace(probe_l2_steps=12, model_dir=str(tmp_path))
    result = protocol.linear_probe(_store(tmp_path, "train", train_x, train_y),
                                   _store(tmp_path, "test", test_x, test_y), 4,
                                   config.probe, seed=0)
    assert result["linear_top1"] == 1.0
    assert result["linear_top5"] == 1.0


def _correlated(x):
    """x mixed by a fixed matrix of condition number ~1e3, as neighbouring pixels are."""
    rng = np.random.default_rng(7)
    rotation, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    scales = np.logspace(0, -3, x.shape[1])
    return (x @ (rotation * scales) @ rotation.T).astype(np.float32)


@pytest.mark.parametrize("preconditioned", [False, True])
@pytest.mark.parametrize("l2", [1e-4, 1e-2])
def test_fit_agrees_with_scikit_learn(l2, preconditioned):
    """Same objective: sklearn's C = 1 / (l2 N). Weights, loss and accuracy agree,
    solved for W directly or preconditioned."""
    rng = np.random.default_rng(1)
    x, y = _mixture(rng, 3000, 6, 24, spread=2.0)
    test_x, test_y = _mixture(rng, 1000, 6, 24, spread=2.0)
    spectrum = (logistic.second_moment_spectrum(_batches(x, y), len(x), 24)
                if preconditioned else None)
    classifier, info = logistic.fit(_batches(x, y), len(x), 24, 6, l2, spectrum=spectrum,
                                    options=logistic.SolverOptions(gtol=1e-7))
    assert info["converged"]
    reference = LogisticRegression(C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=10000)
    reference.fit(x.astype(np.float64), y)
    ours = np.argmax(test_x @ classifier.weights + classifier.bias, 1)
    theirs = reference.predict(test_x.astype(np.float64))
    assert abs(np.mean(ours == test_y) - np.mean(theirs == test_y)) <= 0.003
    # sklearn's multinomial coefficients are defined up to a shift per feature
    # (softmax invariance), which the penalty pins at mean zero over classes.
    np.testing.assert_allclose(classifier.weights, reference.coef_.T, atol=2e-3)
    centred_bias = reference.intercept_ - reference.intercept_.mean()
    np.testing.assert_allclose(classifier.bias - classifier.bias.mean(), centred_bias,
                               atol=2e-3)


def test_preconditioning_finds_the_same_minimum_in_fewer_iterations():
    rng = np.random.default_rng(3)
    x, y = _mixture(rng, 3000, 6, 24, spread=2.0)
    x = _correlated(x)
    batches, options = _batches(x, y), logistic.SolverOptions(gtol=1e-6)
    spectrum = logistic.second_moment_spectrum(batches, len(x), 24)
    # The spectrum is that of x^T x / N (NumPy's, in float64; ours sums in float32).
    reference = np.linalg.eigvalsh(x.astype(np.float64).T @ x / len(x))
    np.testing.assert_allclose(spectrum[0], reference, atol=1e-6 * reference.max())
    plain, plain_info = logistic.fit(batches, len(x), 24, 6, 1e-5, options=options)
    ours, info = logistic.fit(batches, len(x), 24, 6, 1e-5, options=options,
                              spectrum=spectrum)
    assert plain_info["converged"] and info["converged"]
    assert info["iterations"] * 3 <= plain_info["iterations"], (info, plain_info)
    # The same minimum (the plain solver stops a little short of it: 1.4e-6 higher).
    assert abs(info["loss"] - plain_info["loss"]) <= 1e-5 * plain_info["loss"]
    assert info["loss"] <= plain_info["loss"]
    agree = np.argmax(x @ ours.weights + ours.bias, 1) == np.argmax(
        x @ plain.weights + plain.bias, 1)
    assert np.mean(agree) >= 0.995
    # A warm start is mapped into V (P^-1 W): from the plain solution it takes a few
    # iterations (4 measured), not the 32 from zeros.
    _, again = logistic.fit(batches, len(x), 24, 6, 1e-5, init=plain, options=options,
                            spectrum=spectrum)
    assert again["iterations"] <= info["iterations"] // 4
    assert again["loss"] <= plain_info["loss"]


def test_whole_protocol_agrees_with_scikit_learn_at_the_chosen_l2(tmp_path):
    """The protocol's test top-1 equals sklearn's, refitted on the same standardised
    train split with the l2 the protocol chose, within 0.3 points."""
    rng = np.random.default_rng(2)
    train_x, train_y = _mixture(rng, 4000, 5, 32, spread=2.5)
    test_x, test_y = _mixture(rng, 1500, 5, 32, spread=2.5)
    train_x[:, 3] = 7.0  # a constant feature, dropped by the standardiser
    train = _store(tmp_path, "train", train_x, train_y, shard_rows=1000)
    test = _store(tmp_path, "test", test_x, test_y)
    config = Config().replace(probe_l2_steps=12, model_dir=str(tmp_path))
    result = protocol.linear_probe(train, test, 5, config.probe, seed=0)
    mean, std = train_x.mean(0), train_x.std(0)
    std[std == 0] = 1.0
    reference = LogisticRegression(C=1.0 / (result["l2"] * len(train_x)), tol=1e-8,
                                   max_iter=10000)
    reference.fit((train_x - mean) / std, train_y)
    expected = reference.score((test_x - mean) / std, test_y)
    assert abs(result["linear_top1"] - expected) <= 0.003
    assert 0.5 < expected < 0.99


def test_l2_is_chosen_on_the_held_out_train_rows_never_on_test(tmp_path):
    rng = np.random.default_rng(3)
    train_x, train_y = _mixture(rng, 2000, 4, 16, spread=3.0)
    test_x, test_y = _mixture(rng, 800, 4, 16, spread=3.0)
    train = _store(tmp_path, "train", train_x, train_y)
    config = Config().replace(probe_l2_steps=12, probe_patience=0, model_dir=str(tmp_path))
    result = protocol.linear_probe(train, _store(tmp_path, "test", test_x, test_y), 4,
                                   config.probe, seed=0)
    scores = [entry["holdout_top1"] for entry in result["l2_grid"]]
    assert len(scores) == 12
    best = result["l2_grid"][int(np.argmax(scores))]["l2"]  # first maximum: strongest
    assert result["l2"] == best
    # Test labels shuffled: the choice (and the held-out scores) do not move.
    shuffled = protocol.linear_probe(
        train, _store(tmp_path, "shuffled", test_x, rng.permutation(test_y)), 4,
        config.probe, seed=0)
    assert shuffled["l2"] == result["l2"]
    assert [e["holdout_top1"] for e in shuffled["l2_grid"]] == scores
    assert result["num_holdout_examples"] == 200


def test_streamed_batches_fit_the_same_classifier_as_in_memory(tmp_path):
    rng = np.random.default_rng(4)
    x, y = _mixture(rng, 3000, 3, 10, spread=2.0)
    store = _store(tmp_path, "train", x, y, shard_rows=700)
    standardiser = protocol.Standardiser(store)
    in_memory = protocol.RowBatches(store, standardiser)
    streamed = protocol.RowBatches(store, standardiser, batch_rows=256, in_memory_bytes=0)
    assert len(list(streamed())) > 5
    a, _ = logistic.fit(in_memory, 3000, standardiser.dim, 3, 1e-3)
    b, _ = logistic.fit(streamed, 3000, standardiser.dim, 3, 1e-3)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-4)
    # A subset masks the batches in memory and filters the streamed ones: same rows.
    rows = protocol.holdout_rows(3000, 0.3, seed=0)
    for whole in (in_memory, streamed):
        part = whole.subset(rows)
        assert part.count == 900
        labels = np.concatenate([batch_labels.numpy() for _, batch_labels in part()])
        np.testing.assert_array_equal(labels, y[rows])
        np.testing.assert_allclose(np.concatenate([x.numpy() for x, _ in part()]),
                                   standardiser(x[rows]), rtol=1e-6, atol=1e-6)


def test_duplicate_features_are_merged_without_changing_the_solution(tmp_path):
    """Grayscale pixels replicated to RGB: three equal columns per pixel."""
    rng = np.random.default_rng(5)
    x, y = _mixture(rng, 2000, 3, 6, spread=1.5)
    tripled = np.repeat(x, 3, axis=1)
    merged = protocol.Standardiser(_store(tmp_path, "tripled", tripled, y))
    assert merged.dim == 6
    standardised = (tripled - tripled.mean(0)) / tripled.std(0)
    reference = LogisticRegression(C=1.0 / (1e-2 * len(x)), tol=1e-10, max_iter=10000)
    reference.fit(standardised, y)
    ours, _ = logistic.fit(protocol.RowBatches(_store(tmp_path, "t2", tripled, y), merged),
                           len(x), merged.dim, 3, 1e-2,
                           options=logistic.SolverOptions(gtol=1e-7))
    ours_logits = merged(tripled) @ ours.weights + ours.bias
    theirs_logits = reference.decision_function(standardised)
    np.testing.assert_allclose(ours_logits - ours_logits.mean(1, keepdims=True),
                               theirs_logits - theirs_logits.mean(1, keepdims=True),
                               atol=5e-3)


def test_feature_store_round_trip_and_key(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(250, 4)).astype(np.float32)
    y = rng.integers(0, 3, 250)
    store = feature_store.write_store(
        str(tmp_path / "s"), "key-a", [(x[:100], y[:100]), (x[100:], y[100:])], shard_rows=64)
    assert [s["rows"] for s in store.manifest["shards"]] == [64, 64, 64, 58]
    reopened = feature_store.open_store(str(tmp_path / "s"), "key-a")
    np.testing.assert_array_equal(reopened.features(), x)
    np.testing.assert_array_equal(reopened.labels, y)
    assert feature_store.open_store(str(tmp_path / "s"), "key-b") is None
    manifest = json.loads((tmp_path / "s" / feature_store.MANIFEST).read_text())
    assert manifest["num_examples"] == 250 and manifest["dim"] == 4


def test_the_walk_does_not_stop_on_the_strong_plateau(monkeypatch):
    """The scores of a real encoder (lr 0.2 run): near-zero weights at the strong end
    give 64.43%, 64.45%, 64.43%, 9.4% by chance while the objective is still the label
    entropy (ln 10); the walk must go on to the informative fits and stop 2 after
    their best, here l2 = 100."""
    num_classes, n = 10, 10000
    labels = np.arange(n) % num_classes
    script = [(1e5, .6443, 2.30257), (3.2e4, .6445, 2.30255), (1e4, .6443, 2.30246),
              (3.2e3, .094, 2.30219), (1e3, .70, 2.1), (316, .80, 1.5), (100, .82, 1.0),
              (32, .81, .8), (10, .80, .7), (3, .79, .6), (1, .78, .5)]
    accuracy_of = {l2: accuracy for l2, accuracy, _ in script}
    fitted = []

    class Scripted:
        """Logits right on the first `accuracy` share of the held-out rows."""
        def __init__(self, l2):
            self.l2 = l2

        def logits(self, batches):
            del batches
            right = np.arange(n) < round(accuracy_of[self.l2] * n)
            return np.eye(num_classes)[np.where(right, labels, (labels + 1) % num_classes)]

    def scripted_fit(batches, num_examples, num_features, num_classes_, l2, init=None,
                     options=None, spectrum=None):
        fitted.append(l2)
        loss = next(loss for value, _, loss in script if value == l2)
        return Scripted(l2), {"iterations": 1, "converged": True, "loss": loss,
                              "seconds": 0.0}

    monkeypatch.setattr(logistic, "fit", scripted_fit)
    rows = _batches(np.zeros((n, 1)), labels)
    rows.count, rows.labels = n, labels
    _, selection = logistic.select_and_refit(rows, rows, rows, 1, num_classes,
                                             [l2 for l2, _, _ in script], patience=2)
    assert selection["l2"] == 100
    assert fitted == [l2 for l2, _, _ in script[:9]] + [100]  # the walk, then the refit
    assert logistic.informative(2.1, np.log(10)) and not logistic.informative(2.30219,
                                                                               np.log(10))
