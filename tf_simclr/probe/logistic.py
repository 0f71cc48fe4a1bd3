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

Preconditioning: L-BFGS is solved for V with W = P V, P = U diag((s lambda + l2)^-1/2),
where U, lambda are the eigenvectors and eigenvalues of the features' second moment
x^T x / N. The objective's curvature along W's rows is about that moment times the
softmax's (at most 1/4) plus l2, so in V it is nearly uniform and L-BFGS needs far
fewer iterations where features are correlated (raw pixels: bench/README.md). The
minimiser is the same W; only the path to it changes. x P is never formed: P acts on
the parameters, a [D, D] x [D, C] product per evaluation.
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
    tolerance; of the gradient in W, whether preconditioned or not), relative
    objective decrease <= ftol, or max_iterations. `curvature_scale` is s of the
    preconditioner; 0 solves for W directly."""
    max_iterations: int = 1000
    gtol: float = 1e-4
    ftol: float = 1e-10
    history: int = 20
    curvature_scale: float = 0.25


def second_moment_spectrum(batches, num_examples, num_features):
    """(eigenvalues [D], eigenvectors [D, D]) of x^T x / N over `batches`, float64."""
    moment = np.zeros((num_features, num_features))
    for x, _ in batches():
        moment += tf.matmul(x, x, transpose_a=True).numpy()
    return np.linalg.eigh(moment / num_examples)


def _preconditioner(spectrum, l2, curvature_scale):
    """P [D, D] = U diag((s lambda + l2)^-1/2), or None without a spectrum."""
    if spectrum is None or curvature_scale == 0:
        return None
    values, vectors = spectrum
    curvature = curvature_scale * np.maximum(values, 0.0) + l2
    # l2 = 0 on a direction the features never take: keep P finite.
    curvature = np.maximum(curvature, 1e-12 * max(float(curvature.max()), 1e-12))
    return vectors / np.sqrt(curvature)


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
        options=SolverOptions(), spectrum=None):
    """Minimises the objective above over `batches`; returns (Classifier, info).

    Args:
      batches: callable returning an iterable of (x float32 [n, D], labels int32 [n])
        that covers the training rows once (called once per L-BFGS evaluation).
      num_examples: N, the rows the batches cover.
      l2: regularisation strength (>= 0).
      init: a Classifier to start from (warm start), else zeros.
      spectrum: second_moment_spectrum of the rows, to precondition with (see the
        module docstring); None solves for W directly.

    Returns:
      The classifier and {"iterations", "converged", "loss", "seconds"}.
    """
    started = time.time()
    shape_w = (num_features, num_classes)
    size_w = num_features * num_classes
    precondition = _preconditioner(spectrum, l2, options.curvature_scale)

    def unpack(theta):
        """(W [D, C], b [C]) of the solver's parameters (V and b when preconditioned)."""
        v, b = theta[:size_w].reshape(shape_w), theta[size_w:]
        return (v if precondition is None else precondition @ v), b

    # The point last evaluated and its largest gradient entry in (W, b).
    last = {"theta": None, "gradient_max": np.inf}

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
        grad_w, grad_b = grad_w / num_examples + l2 * w, grad_b / num_examples
        last["theta"] = theta.copy()
        last["gradient_max"] = max(np.max(np.abs(grad_w)), np.max(np.abs(grad_b)))
        if precondition is not None:
            grad_w = precondition.T @ grad_w
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    if init is None:
        theta0 = np.zeros(size_w + num_classes)
    else:
        v0 = init.weights.astype(np.float64)
        if precondition is not None:
            v0 = np.linalg.solve(precondition, v0)
        theta0 = np.concatenate([v0.ravel(), init.bias.astype(np.float64)])
    # SciPy's gtol bounds the gradient it sees, which is V's when preconditioned; the
    # callback stops on W's instead, so both paths stop at the same accuracy.
    stopped = {"gradient": False}

    def stop_on_gradient_of_w(intermediate_result):
        if (np.array_equal(intermediate_result.x, last["theta"])
                and last["gradient_max"] <= options.gtol):
            stopped["gradient"] = True
            raise StopIteration

    solution = scipy.optimize.minimize(
        objective, theta0, jac=True, method="L-BFGS-B",
        callback=None if precondition is None else stop_on_gradient_of_w,
        options={"maxiter": options.max_iterations,
                 "gtol": options.gtol if precondition is None else 0.0,
                 "maxcor": options.history, "ftol": options.ftol})
    w, b = unpack(solution.x)
    converged = bool(solution.success) or stopped["gradient"]
    info = {"iterations": int(solution.nit), "converged": converged,
            "loss": float(solution.fun), "seconds": time.time() - started}
    if not converged:
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
    most iterations and, past the optimum, only overfit further. Every fit is
    preconditioned with the fit rows' second moment (one more pass over them), unless
    options.curvature_scale is 0.

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
    spectrum = (second_moment_spectrum(fit_rows, fit_rows.count, num_features)
                if options.curvature_scale else None)
    for l2 in grid:
        classifier, info = fit(fit_rows, fit_rows.count, num_features, num_classes, l2,
                               init=classifier, options=options, spectrum=spectrum)
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
                      options=options, spectrum=spectrum)
    return final, {"l2": chosen, "grid": scores, "refit": info}
