"""The run's optimizer, its weight-decay exclusions and the weight-decay loss term.

Official semantics (google-research/simclr tf2/model.py `build_optimizer`,
`add_weight_decay`), with the exclusions found structurally instead of by the
substrings 'batch_normalization' / 'bias' / 'head_supervised' in `variable.name`,
which match nothing in Keras 3.
"""

import keras
import tensorflow as tf

from tf_simclr import config as config_lib
from tf_simclr.train.lars import LARS

# What build_optimizer returns under --precision=mixed_float16; the loop checks for
# it to call optimizer.scale_loss (apply_gradients unscales and skips overflows).
LossScaleOptimizer = keras.optimizers.LossScaleOptimizer


def _layers(model):
    """The model and all its sublayers, recursively (Keras' own flattening walk)."""
    return model._flatten_layers(include_self=True, recursive=True)


def _unique(variables):
    seen, unique = set(), []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            unique.append(v)
    return unique


def _batch_norm_variables(model):
    return _unique(v for layer in _layers(model)
                   if isinstance(layer, keras.layers.BatchNormalization)
                   for v in layer.weights)


def _bias_variables(model):
    """The `bias` variable of every layer that has one (Dense, Conv*, EinsumDense...)."""
    return _unique(layer.bias for layer in _layers(model)
                   if isinstance(getattr(layer, "bias", None), keras.Variable))


def _supervised_head_variables(model):
    head = getattr(model, "supervised_head", None)
    if head is None:
        return []
    if not isinstance(head, keras.layers.Layer):
        raise ValueError(f"model.supervised_head is {head!r}; expected a keras Layer "
                         "or None.")
    return list(head.weights)


def decay_exclusions(model):
    """The variables that get neither weight decay nor a LARS trust ratio.

    Found structurally (official: BN, biases, the supervised head): every variable
    of every keras.layers.BatchNormalization anywhere in the model (gamma, beta and
    the moving statistics), the `bias` of every layer that has one, and every
    variable of `model.supervised_head` if the model has one that is not None.

    Args:
        model: a built keras Model (its variables must exist).

    Returns:
        A list of keras.Variables, in the model's layer order, without duplicates.
    """
    if not model.weights:
        raise ValueError(f"model {model.name!r} has no variables yet; expected a "
                         "built model (call it once on an input first).")
    return _unique(_batch_norm_variables(model) + _bias_variables(model)
                   + _supervised_head_variables(model))


def build_optimizer(config, learning_rate, model):
    """The optimizer named by --optimizer, created in the current strategy scope.

    lars: LARS(momentum, weight_decay) excluding `decay_exclusions(model)` from decay
        and trust ratio; momentum: SGD(momentum, nesterov=True) as official; adam:
        Adam with default betas; adamw: AdamW(weight_decay) with the same
        exclusions. momentum and adam get their decay from `weight_decay_loss`.
        With --precision=mixed_float16 the optimizer is wrapped in a
        LossScaleOptimizer (dynamic loss scale) so float16 gradients do not
        underflow; the loop multiplies its loss by `optimizer.scale_loss`.

    Args:
        config: a `tf_simclr.config.Config`.
        learning_rate: float or LearningRateSchedule (`schedules.build_schedule`).
        model: the model to train; must be built for lars and adamw.

    Returns:
        An unbuilt keras optimizer. Under a strategy, create it inside
        `strategy.scope()` and call `optimizer.build(model.trainable_variables)`
        there, before the first `strategy.run`.
    """
    name = config.optim.optimizer
    if name == "lars":
        optimizer = LARS(learning_rate, momentum=config.optim.momentum,
                         weight_decay=config.optim.weight_decay,
                         exclude_from_weight_decay=decay_exclusions(model))
    elif name == "momentum":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.optim.momentum,
                                         nesterov=True)
    elif name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate,
                                           weight_decay=config.optim.weight_decay)
        optimizer.exclude_from_weight_decay(var_list=decay_exclusions(model))
    else:
        raise ValueError(f"--optimizer={name!r} is not supported; expected one of "
                         f"{', '.join(repr(o) for o in config_lib.OPTIMIZERS)}.")
    if config.train.precision == "mixed_float16":
        return LossScaleOptimizer(optimizer)
    return optimizer


def weight_decay_loss(config, model):
    """The decay term the loop adds to each replica's loss (logged train/weight_decay).

    weight_decay * sum(l2_loss(v)) with l2_loss(v) = sum(v ** 2) / 2 over:
      lars:          the supervised head's non-bias variables (LARS decays the rest);
      momentum/adam: every trainable variable that is not a BatchNorm variable,
                     biases and the supervised head included;
      adamw:         none (AdamW decays in the optimizer), so 0.

    Args:
        config: a `tf_simclr.config.Config`.
        model: the model being trained.

    Returns:
        A float32 scalar. Each replica adds the full term; after the loop's
        division by num_replicas_in_sync and the SUM all-reduce it counts once.
    """
    name = config.optim.optimizer
    if name == "lars":
        biases = {id(v) for v in _bias_variables(model)}
        decayed = [v for v in _supervised_head_variables(model)
                   if v.trainable and id(v) not in biases]
    elif name in ("momentum", "adam"):
        batch_norm = {id(v) for v in _batch_norm_variables(model)}
        decayed = [v for v in model.trainable_variables if id(v) not in batch_norm]
    elif name == "adamw":
        decayed = []
    else:
        raise ValueError(f"--optimizer={name!r} is not supported; expected one of "
                         f"{', '.join(repr(o) for o in config_lib.OPTIMIZERS)}.")
    if not decayed or config.optim.weight_decay == 0:
        return tf.constant(0.0, tf.float32)
    return config.optim.weight_decay * tf.add_n(
        [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed])
