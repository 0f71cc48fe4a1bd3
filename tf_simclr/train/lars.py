"""LARS: layer-wise adaptive rate scaling with classic momentum, as a Keras 3 optimizer.

You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks";
the update of google-research/simclr `lars_optimizer.py` (classic momentum, weight
decay inside the trust ratio), which Keras 3 cannot load (it subclasses the
removed legacy optimizer).
"""

import numbers
import re

import keras
from keras import ops


def _split_exclusions(argument, items):
    """(variables, path regexes) from a list mixing keras.Variables and strs."""
    if items is None:
        return [], []
    if isinstance(items, (str, keras.Variable)):
        raise ValueError(f"{argument}={items!r} is a single item; expected a list of "
                         "keras.Variables and/or variable.path regex strings.")
    variables, patterns = [], []
    for item in items:
        if isinstance(item, str):
            try:
                re.compile(item)
            except re.error as e:
                raise ValueError(f"{argument} contains {item!r}, which is not a valid "
                                 f"regex ({e}); expected variable.path regexes.") from e
            patterns.append(item)
        elif isinstance(item, keras.Variable):
            variables.append(item)
        else:
            raise ValueError(f"{argument} contains {item!r}; expected keras.Variables "
                             "and/or variable.path regex strings.")
    return variables, patterns


@keras.saving.register_keras_serializable(package="tf_simclr")
class LARS(keras.optimizers.Optimizer):
    """LARS with classic momentum, coupled weight decay and per-variable exclusions.

    For each variable w with gradient g (a whole variable is one "layer"):
      g <- g + weight_decay * w                        unless excluded from decay
      trust = trust_coefficient * |w| / |g|            unless excluded from
              (1 if |w| = 0 or |g| = 0)                adaptation (then trust = 1)
      v <- momentum * v + lr * trust * g
      w <- w - v      (nesterov: w <- w - (momentum * v + lr * trust * g))

    Exclusions are variables (matched by identity, also under tf.distribute) or
    regex strings matched with re.search against `variable.path`
    ("encoder/batch_normalization/gamma"). Never `variable.name`: in Keras 3 that is
    only "gamma" or "kernel". The flags are fixed per variable index in `build()`,
    because under a strategy `update_step` receives per-replica tf.Variables that
    have no `.path`; so build inside `strategy.scope()` with
    `opt.build(model.trainable_variables)` before the first distributed step.

    Args:
        learning_rate: float or LearningRateSchedule.
        momentum: in [0, 1].
        weight_decay: >= 0, coupled (added to the gradient, inside the trust ratio).
            It is not the base class's decoupled `weight_decay`, which stays None.
        trust_coefficient: eta > 0 (official EETA_DEFAULT 0.001).
        exclude_from_weight_decay: list of keras.Variables and/or path regexes.
        exclude_from_layer_adaptation: the same kind of list; None means the same
            list as exclude_from_weight_decay (as official).
        nesterov: Nesterov momentum instead of classic.
        **kwargs: base optimizer arguments (name, clipnorm, ...).

    `get_config` stores variable exclusions as exact-path regexes, so a restored
    optimizer excludes the same variables of a model rebuilt with the same paths.
    """

    def __init__(
        self,
        learning_rate,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        exclude_from_weight_decay=None,
        exclude_from_layer_adaptation=None,
        nesterov=False,
        name="lars",
        **kwargs,
    ):
        if not isinstance(momentum, numbers.Real) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum!r} is not supported; expected a "
                             "value in [0, 1].")
        if not isinstance(weight_decay, numbers.Real) or not weight_decay >= 0.0:
            raise ValueError(f"weight_decay={weight_decay!r} is not supported; "
                             "expected a value >= 0.")
        if not isinstance(trust_coefficient, numbers.Real) or not trust_coefficient > 0:
            raise ValueError(f"trust_coefficient={trust_coefficient!r} is not "
                             "supported; expected a value > 0.")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if exclude_from_layer_adaptation is None:
            exclude_from_layer_adaptation = exclude_from_weight_decay
        decay_vars, decay_patterns = _split_exclusions(
            "exclude_from_weight_decay", exclude_from_weight_decay)
        adapt_vars, adapt_patterns = _split_exclusions(
            "exclude_from_layer_adaptation", exclude_from_layer_adaptation)
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.trust_coefficient = float(trust_coefficient)
        self.nesterov = bool(nesterov)
        # Keys and paths only: storing the variables themselves would make the
        # optimizer track (and checkpoint) them as its own.
        self._decay_keys = frozenset(self._var_key(v) for v in decay_vars)
        self._adapt_keys = frozenset(self._var_key(v) for v in adapt_vars)
        self._decay_patterns = tuple(decay_patterns)
        self._adapt_patterns = tuple(adapt_patterns)
        self._decay_config = tuple(decay_patterns + [_exact_path(v) for v in decay_vars])
        self._adapt_config = tuple(adapt_patterns + [_exact_path(v) for v in adapt_vars])

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Not used by LARS: pass exclude_from_weight_decay to the constructor."""
        raise ValueError("LARS takes its exclusions in the constructor "
                         "(exclude_from_weight_decay=, exclude_from_layer_adaptation=); "
                         "the base method matches variable.name, which Keras 3 "
                         "reduces to e.g. 'kernel'.")

    def _excluded(self, variable, keys, patterns):
        if self._var_key(variable) in keys:
            return True
        if not patterns:
            return False
        path = getattr(variable, "path", None)
        if path is None:
            raise ValueError(f"cannot match exclusion patterns {list(patterns)} "
                             f"against {variable!r}, which has no .path; expected "
                             "keras.Variables (build with model.trainable_variables).")
        return any(re.search(p, path) for p in patterns)

    def build(self, var_list):
        """Creates the momentum slots and fixes the exclusion flags by variable index."""
        if self.built:
            return
        super().build(var_list)
        self._momentums = self.add_optimizer_variables(var_list, "momentum")
        self._use_decay = tuple(
            self.lars_weight_decay > 0
            and not self._excluded(v, self._decay_keys, self._decay_patterns)
            for v in var_list)
        self._use_trust = tuple(
            not self._excluded(v, self._adapt_keys, self._adapt_patterns)
            for v in var_list)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = ops.cast(gradient, dtype)
        if self._use_decay[index]:
            grad = grad + ops.cast(self.lars_weight_decay, dtype) * variable
        if self._use_trust[index]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            trust = ops.where(
                ops.logical_and(w_norm > 0, g_norm > 0),
                ops.cast(self.trust_coefficient, dtype) * w_norm
                / ops.maximum(g_norm, ops.cast(1e-30, dtype)),
                ops.cast(1.0, dtype))
            lr = lr * trust
        velocity = self._momentums[index]
        momentum = ops.cast(self.momentum, dtype)
        next_velocity = momentum * velocity + lr * grad
        self.assign(velocity, next_velocity)
        if self.nesterov:
            self.assign_sub(variable, momentum * next_velocity + lr * grad)
        else:
            self.assign_sub(variable, next_velocity)

    def get_config(self):
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "weight_decay": self.lars_weight_decay,
            "trust_coefficient": self.trust_coefficient,
            "exclude_from_weight_decay": list(self._decay_config),
            "exclude_from_layer_adaptation": list(self._adapt_config),
            "nesterov": self.nesterov,
        })
        return config


def _exact_path(variable):
    """A regex that matches exactly this variable's path."""
    return "^" + re.escape(variable.path) + "$"
