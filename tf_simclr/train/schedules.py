"""The SimCLR learning-rate schedule: linear warmup, then cosine decay to zero.

Official `WarmUpAndCosineDecay` (tf2/model.py), rewritten for Keras 3, where
`tf.keras.experimental.CosineDecay` no longer exists.
"""

import math
import numbers

import keras
import tensorflow as tf

from tf_simclr import config as config_lib


@keras.saving.register_keras_serializable(package="tf_simclr")
class WarmUpAndCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step): 0 -> base linearly over warmup_steps, cosine to 0 at total_steps.

    With w = warmup_steps, T = total_steps and b = base_learning_rate:
      step < w:       b * step / w
      w <= step < T:  b * 0.5 * (1 + cos(pi * (step - w) / (T - w)))
      step >= T:      0
    If w >= T the whole run is warmup (as official, which never reaches the peak).
    The schedule is stateless: its position is the optimizer's `iterations`, which
    checkpoints save, so resuming continues the schedule.

    Args:
        base_learning_rate: peak learning rate b >= 0 (already batch-scaled).
        warmup_steps: w >= 0; 0 starts the cosine at b.
        total_steps: T >= 1, the number of training steps.
        name: optional name for the ops.
    """

    def __init__(self, base_learning_rate, warmup_steps, total_steps, name=None):
        super().__init__()
        if not base_learning_rate >= 0:
            raise ValueError(f"base_learning_rate={base_learning_rate!r} is not "
                             "supported; expected a value >= 0.")
        if not (isinstance(warmup_steps, numbers.Integral) and warmup_steps >= 0):
            raise ValueError(f"warmup_steps={warmup_steps!r} is not supported; "
                             "expected an int >= 0.")
        if not (isinstance(total_steps, numbers.Integral) and total_steps >= 1):
            raise ValueError(f"total_steps={total_steps!r} is not supported; "
                             "expected an int >= 1.")
        self.base_learning_rate = float(base_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.name = name

    def __call__(self, step):
        """step: int or scalar tensor (the optimizer's iterations) -> float32 lr."""
        with tf.name_scope(self.name or "WarmUpAndCosineDecay"):
            step = tf.cast(step, tf.float32)
            base = tf.constant(self.base_learning_rate, tf.float32)
            warmup = float(self.warmup_steps)
            # max(.., 1) keeps the branch that tf.where discards free of 0 / 0.
            warmup_lr = base * step / max(warmup, 1.0)
            progress = (step - warmup) / max(float(self.total_steps) - warmup, 1.0)
            cosine_lr = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
            lr = tf.where(step < warmup, warmup_lr, cosine_lr)
            return tf.where(step < float(self.total_steps), lr, tf.zeros_like(lr))

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "name": self.name,
        }


def build_schedule(config, num_train_examples):
    """The run's schedule: config.scaled_learning_rate, warmup_steps, train_steps.

    Args:
        config: a `tf_simclr.config.Config`.
        num_train_examples: size of the training split (sets epochs -> steps).

    Returns:
        A WarmUpAndCosineDecay.
    """
    if not (isinstance(num_train_examples, numbers.Integral) and num_train_examples >= 1):
        raise ValueError(f"num_train_examples={num_train_examples!r} is not "
                         "supported; expected an int >= 1.")
    return WarmUpAndCosineDecay(
        base_learning_rate=config_lib.scaled_learning_rate(config),
        warmup_steps=config_lib.warmup_steps(config, num_train_examples),
        total_steps=config_lib.train_steps(config, num_train_examples))
