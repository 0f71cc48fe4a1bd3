"""L2-regularised multinomial logistic regression fitted to convergence with L-BFGS.

The SimCLR transfer protocol (Chen et al. 2020, appendix B.8, after Kornblith et
al. 2019): frozen features, no augmentation; the regularisation strength is chosen
from a log-spaced grid on a held-out part of the train split, then the classifier
is refitted on the whole train split with it and scored on the test split.

Objective, for standardised features x_i [D], labels y_i, weights W [D, C], bias b [C]:

    mean_i cross_entropy(softmax(x_i W + b), y_i) + l2 / 2 * ||W||^2

(the bias is not regularised). scikit-learn's LogisticRegression(C) minimises N
times this with l2 = 1 / (C N). SciPy's L-BFGS-B drives the optimisation; loss
and gradient come from TensorFlow in row batches, so features that do not fit in
memory are streamed from their shards and the matmuls run on a GPU when one is
visible. The grid is walked from the strongest regularisation down, each fit
starting from the previous solution.
"""

import dataclasses
import logging
import time

import numpy as np
import scipy.optimize
import tensorflow as tf

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SolverOptions:
    """L-BFGS stopping rule: largest gradient entry <= gtol (scikit-learn's default
    tolerance), relative objective decrease <= ftol, or max_iterations."""
    max_iterations: int = 1000
    gtol: float = 1e-4
    ftol: float = 1e-10
    history: int = 20


def l2_grid(low, high, count):
    """`count` log-spaced values from `high` down to `low` (the fitting order)."""
    return [float(v) for v in np.logspace(np.log10(high), np.log10(low), count)]


@tf.function(reduce_retracing=True)
def _batch_terms(x, labels, weights, bias):
    """Summed cross-entropy and its gradient over one batch.

    Per-example terms in the features' float32, summed in float64: a float32 sum
    over tens of thousands of rows is noisy at 1e-7 of the objective, which made
    L-BFGS's line search stop early ("ABNORMAL") at weak regularisation.
    """
    log_probs = tf.nn.log_softmax(tf.matmul(x, weights) + bias)
    picked = tf.gather(log_probs, labels, batch_dims=1)
    loss = -tf.reduce_sum(tf.cast(picked, tf.float64))
    residual = tf.exp(log_probs) - tf.one_hot(labels, tf.shape(bias)[0], dtype=x.dtype)
    grad_w = tf.matmul(x, residual, transpose_a=True)
    return loss, tf.cast(grad_w, tf.float64), tf.reduce_sum(tf.cast(residual, tf.float64), 0)


@tf.function(reduce_retracing=True)
def _batch_logits(x, weights, bias):
    return tf.matmul(x, weights) + bias


class Classifier:
    """A fitted linear classifier: weights float32 [D, C], bias [C]."""

    def __init__(self, weights, bias):
        self.weights = np.asarray(weights, np.float32)
        self.bias = np.asarray(bias, np.float32)

    def logits(self, batches):
        """float32 [N, C] over `batches` (an iterable of (x [n, D], labels))."""
        w, b = tf.constant(self.weights), tf.constant(self.bias)
        return np.concatenate([_batch_logits(x, w, b).numpy() for x, _ in batches])


def fit(batches, num_examples, num_features, num_classes, l2, init=None,
        options=SolverOptions()):
    """Minimises the objective above over `batches`; returns (Classifier, info).

    Args:
      batches: callable returning an iterable of (x float32 [n, D], labels int32 [n])
        that covers the training rows once (called once per L-BFGS evaluation).
      num_examples: N, the rows the batches cover.
      l2: regularisation strength (>= 0).
      init: a Classifier to start from (warm start), else zeros.

    Returns:
      The classifier and {"iterations", "converged", "loss", "seconds"}.
    """
    started = time.time()
    shape_w = (num_features, num_classes)
    size_w = num_features * num_classes

    def unpack(theta):
        return theta[:size_w].reshape(shape_w), theta[size_w:]

    def objective(theta):
        w, b = unpack(theta)
        w32, b32 = tf.constant(w, tf.float32), tf.constant(b, tf.float32)
        loss, grad_w, grad_b = 0.0, np.zeros(shape_w), np.zeros(num_classes)
        for x, labels in batches():
            batch_loss, batch_w, batch_b = _batch_terms(x, labels, w32, b32)
            loss += batch_loss.numpy()
            grad_w += batch_w.numpy()
            grad_b += batch_b.numpy()
        loss = loss / num_examples + 0.5 * l2 * np.sum(w * w)
        grad_w = grad_w / num_examples + l2 * w
        return loss, np.concatenate([grad_w.ravel(), grad_b / num_examples])

    if init is None:
        theta0 = np.zeros(size_w + num_classes)
    else:
        theta0 = np.concatenate([init.weights.astype(np.float64).ravel(),
                                 init.bias.astype(np.float64)])
    solution = scipy.optimize.minimize(
        objective, theta0, jac=True, method="L-BFGS-B",
        options={"maxiter": options.max_iterations, "gtol": options.gtol,
                 "maxcor": options.history, "ftol": options.ftol})
    w, b = unpack(solution.x)
    info = {"iterations": int(solution.nit), "converged": bool(solution.success),
            "loss": float(solution.fun), "seconds": time.time() - started}
    if not solution.success:
        logger.warning("L-BFGS at l2=%g stopped after %d iterations without converging: %s",
                       l2, solution.nit, solution.message)
    return Classifier(w, b), info


# A fit is off the plateau once its objective is this share of the label entropy
# or less (it explains at least 1% of it).
INFORMATIVE_LOSS_SHARE = 0.99


def _entropy(labels, num_classes):
    """Entropy (nats) of the label distribution: the loss of the best bias-only model."""
    frequency = np.bincount(np.asarray(labels), minlength=num_classes) / len(labels)
    frequency = frequency[frequency > 0]
    return float(-np.sum(frequency * np.log(frequency)))


def informative(objective, label_entropy):
    """Whether a fit's objective (mean cross-entropy + penalty) is clearly below what
    predicting the label frequencies alone achieves: weights that carry signal."""
    return objective <= INFORMATIVE_LOSS_SHARE * label_entropy


def select_and_refit(fit_rows, holdout_rows, all_rows, num_features, num_classes, grid,
                     options=SolverOptions(), patience=None):
    """Chooses l2 from `grid` on the held-out rows, then refits on all train rows.

    The grid is walked strongest first; with `patience`, the walk stops once that
    many values in a row score below the best so far, counted only among fits that
    left the strong end's plateau (see `informative`): there the weights are near
    zero and the held-out accuracy of the almost-constant predictions jumps by
    chance (one encoder scored 64.4%, 64.5%, 64.4%, 9.4%, then 82% further down),
    so it says nothing about where the optimum is. The weakest values cost the
    most iterations and, past the optimum, only overfit further.

    Args:
      fit_rows, holdout_rows, all_rows: the train rows without the held-out part, the
        held-out part, and all: each a batches callable (as for `fit`) with `count`
        (rows) and `labels` (int [count]) attributes, e.g. protocol.RowBatches.
      grid: l2 values, strongest first (see l2_grid).

    Returns:
      (classifier fitted on all_rows, {"l2", "grid": per l2 its held-out top-1 and
      fit info, "refit": the final fit's info}).
    """
    scores, classifier, best = [], None, None
    label_entropy = _entropy(fit_rows.labels, num_classes)
    for l2 in grid:
        classifier, info = fit(fit_rows, fit_rows.count, num_features, num_classes, l2,
                               init=classifier, options=options)
        # argmax takes the first of equal logits, as knn.top_k_accuracy does.
        predicted = np.argmax(classifier.logits(holdout_rows()), axis=1)
        accuracy = float(np.mean(predicted == holdout_rows.labels))
        scores.append({"l2": l2, "holdout_top1": accuracy, **info})
        logger.info("probe l2=%.3g: held-out top-1 %.4f (%d iterations, %.1f s)", l2,
                    accuracy, info["iterations"], info["seconds"])
        # Ties keep the stronger regularisation (seen first).
        if best is None or accuracy > best[1]:
            best, worse = (l2, accuracy, classifier), 0
        elif accuracy < best[1] and informative(info["loss"], label_entropy):
            worse += 1
            if patience and worse >= patience:
                break
    chosen, _, start = best
    final, info = fit(all_rows, all_rows.count, num_features, num_classes, chosen, init=start,
                      options=options)
    return final, {"l2": chosen, "grid": scores, "refit": info}
