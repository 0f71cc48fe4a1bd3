"""Evaluation of the supervised head: top-1/top-5 over the whole eval split.

The eval split is padded to whole global batches with a mask, so every replica
runs the same number of full batches and the final partial batch is counted
exactly once: accuracies are sums of masked hits over sums of the mask, reduced
by SUM across replicas.
"""

import tensorflow as tf
from absl import logging

from tf_simclr import config as config_lib
from tf_simclr import input_pipeline
from tf_simclr.train import optimizers


def evaluate(state, source):
    """Evaluates `state.model` on config.data.eval_split; returns a metrics dict."""
    config, strategy, model = state.config, state.strategy, state.model
    info = source.info
    if info.num_eval_examples == 0:
        raise ValueError(f"eval split {config.data.eval_split!r} of {info.name} is empty")
    num_steps = config_lib.eval_steps(config, info.num_eval_examples)
    dataset = input_pipeline.distributed_eval_dataset(strategy, source, config, num_steps)
    top_k = min(5, info.num_classes)

    def replica_step(batch):
        logits = tf.cast(model(batch["image"], training=False)["logits_sup"], tf.float32)
        labels, mask = batch["label"], batch["mask"]

        def hits(k):
            return tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32) * mask)

        return {"top_1": hits(1), "top_k": hits(top_k), "count": tf.reduce_sum(mask)}

    @tf.function
    def run(iterator):
        totals = {"top_1": 0.0, "top_k": 0.0, "count": 0.0}
        for _ in tf.range(num_steps):
            per_replica = strategy.run(replica_step, args=(next(iterator),))
            totals = {k: totals[k] + strategy.reduce("SUM", per_replica[k], axis=None)
                      for k in totals}
        return totals

    totals = {k: float(v) for k, v in run(iter(dataset)).items()}
    count = totals["count"]
    result = {
        "label_top_1_accuracy": totals["top_1"] / count,
        "label_top_5_accuracy": totals["top_k"] / count,
        "regularization_loss": float(optimizers.weight_decay_loss(config, model)),
        "num_eval_examples": int(count),
        "global_step": state.step,
    }
    logging.info("eval %s at step %d on %d examples: top-1 %.4f, top-%d %.4f",
                 config.data.eval_split, state.step, int(count),
                 result["label_top_1_accuracy"], top_k, result["label_top_5_accuracy"])
    return result
