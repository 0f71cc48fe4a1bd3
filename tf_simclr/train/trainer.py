"""The training loop: pretraining and fine-tuning under any tf.distribute strategy.

One `tf.function` runs `n` steps of `strategy.run(step)` (n = steps_per_loop, cut
so that loops end on checkpoint boundaries and at the last step); after each call
the loop checks the loss is finite, prints a progress line, writes TensorBoard
scalars, and saves a checkpoint when one is due or a SIGTERM arrived. With
`knn_monitor_epochs` the kNN monitor measures the representation when an interval
ends (eval/knn_top1, also in the progress line); every loop's point goes into
model_dir/learning_curve.json (written with each checkpoint), drawn as
learning_curve.png at the end.

Gradient contract: each replica's loss is the mean over its local batch, divided
by the number of replicas before differentiation; `apply_gradients` sums gradients
across replicas, so the update equals the single-device update on the global
batch (tests/test_trainer.py checks 2 replicas against 1).
"""

import math
import signal

import keras
import tensorflow as tf
from absl import logging

from tf_simclr import config as config_lib
from tf_simclr import input_pipeline
from tf_simclr.errors import Terminated, TrainingDiverged
from tf_simclr.models import simclr as model_lib
from tf_simclr.train import (
    checkpointing,
    knn_monitor,
    learning_curve,
    losses,
    optimizers,
    schedules,
)
from tf_simclr.train import metrics as metrics_lib
from tf_simclr.train import progress as progress_lib
from tf_simclr.train import strategy as strategy_lib
from tf_simclr.train import teacher as teacher_lib

DEFAULT_MAX_STEPS_PER_LOOP = 50


class _SigtermFlag:
    """Remembers a SIGTERM so the loop can checkpoint and stop between calls."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            del signum, frame
            self.raised = True
        try:
            self._previous = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def steps_per_loop(config, checkpoint_every):
    """`--steps_per_loop`, or min(checkpoint_steps, 50) when it is 0."""
    if config.train.steps_per_loop:
        return config.train.steps_per_loop
    return max(1, min(checkpoint_every, DEFAULT_MAX_STEPS_PER_LOOP))


class TrainState:
    """Model, optimizer and checkpoints of a run, created inside the strategy scope."""

    def __init__(self, config, strategy, num_classes, num_train_examples):
        self.config = config
        self.strategy = strategy
        with strategy.scope():
            self.model = model_lib.build_model(config, num_classes)
            size = config.data.image_size
            self.model(tf.zeros([1, size, size, 3]), training=False)
            self.learning_rate = schedules.build_schedule(config, num_train_examples)
            self.optimizer = optimizers.build_optimizer(config, self.learning_rate, self.model)
            self.optimizer.build(self.model.trainable_variables)
        self.teacher = None
        if config.train.train_mode == "distill":
            self.teacher = teacher_lib.Teacher(config.train.teacher, num_classes,
                                               config.data.image_size, strategy)
        self.checkpointer = checkpointing.Checkpointer(
            config.train.model_dir, self.model, self.optimizer,
            config.train.keep_checkpoint_max, strategy)

    @property
    def step(self):
        return int(self.optimizer.iterations.numpy())

    def restore_or_initialize(self):
        """Resumes from model_dir, else (finetune) loads the source encoder; returns step."""
        step = self.checkpointer.restore_latest()
        if step == 0 and self.config.trains_classifier:
            if self.config.train.checkpoint:
                source = checkpointing.resolve(self.config.train.checkpoint)
                checkpointing.restore_pretrained(self.model, source)
                logging.info("fine-tuning from the encoder in %s", source)
            if self.config.train.zero_init_logits_layer:
                model_lib.zero_init_logits_layer(self.model)
        return step


class Trainer:
    """Runs the steps of one training stage (pretrain or finetune) to the end."""

    def __init__(self, state, source):
        self.state = state
        self.config = state.config
        self.source = source
        self.strategy = state.strategy
        self.num_train = source.info.num_train_examples
        self.total_steps = config_lib.train_steps(self.config, self.num_train)
        self.checkpoint_every = config_lib.checkpoint_steps(self.config, self.num_train)
        self.loop_steps = steps_per_loop(self.config, self.checkpoint_every)
        self._step_fn = {"pretrain": self._pretrain_step, "finetune": self._finetune_step,
                         "distill": self._distill_step}[self.config.train.train_mode]
        self._device_augment = input_pipeline.device_augmenter(self.config, source.info)
        self.history = []  # (step, metrics) after each loop, for callers and tests

    # -- one replica step ---------------------------------------------------------

    def _scaled_loss(self, loss):
        """loss / replicas (and the loss scale under mixed_float16); call inside the tape."""
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        scaled = loss / tf.cast(replicas, loss.dtype)
        if isinstance(self.state.optimizer, keras.optimizers.LossScaleOptimizer):
            scaled = self.state.optimizer.scale_loss(scaled)
        return scaled

    def _apply_gradients(self, tape, scaled_loss):
        variables = self.state.model.trainable_variables
        grads = tape.gradient(scaled_loss, variables)
        self.state.optimizer.apply_gradients(zip(grads, variables))

    def _supervised_terms(self, outputs, labels):
        """Masked supervised loss/accuracy when the model has a head and labels exist."""
        if "logits_sup" not in outputs:
            return tf.constant(0.0), {}
        logits = tf.cast(outputs["logits_sup"], tf.float32)
        weights = losses.labelled_weights(labels)
        loss = losses.supervised_loss(labels, logits, weights=weights)
        accuracy = metrics_lib.masked_accuracy(labels, logits, weights)
        return loss, {"supervised_loss": loss, "supervised_acc": accuracy}

    def _pretrain_step(self, batch):
        view1, view2 = self._views(batch)
        labels = tf.concat([batch["label"], batch["label"]], 0)
        with tf.GradientTape() as tape:
            outputs = self.state.model(tf.concat([view1, view2], 0), training=True)
            z1, z2 = tf.split(tf.cast(outputs["proj_head_output"], tf.float32), 2, 0)
            contrast_loss, logits, contrast_labels = losses.nt_xent_loss(
                z1, z2, self.config.loss.temperature, normalize=self.config.loss.hidden_norm)
            sup_loss, sup_metrics = self._supervised_terms(outputs, labels)
            weight_decay = optimizers.weight_decay_loss(self.config, self.state.model)
            loss = contrast_loss + sup_loss + weight_decay
            scaled_loss = self._scaled_loss(loss)
        self._apply_gradients(tape, scaled_loss)
        values = {
            "total_loss": loss,
            "contrast_loss": contrast_loss,
            "contrast_acc": metrics_lib.contrastive_accuracy(logits, contrast_labels),
            "contrast_entropy": metrics_lib.contrastive_entropy(logits),
            "weight_decay": weight_decay,
        }
        values.update(sup_metrics)
        return values

    def _finetune_step(self, batch):
        images = self._views(batch)[0]
        with tf.GradientTape() as tape:
            outputs = self.state.model(images, training=True)
            sup_loss, sup_metrics = self._supervised_terms(outputs, batch["label"])
            weight_decay = optimizers.weight_decay_loss(self.config, self.state.model)
            loss = sup_loss + weight_decay
            scaled_loss = self._scaled_loss(loss)
        self._apply_gradients(tape, scaled_loss)
        values = {"total_loss": loss, "weight_decay": weight_decay}
        values.update(sup_metrics)
        return values

    def _distill_step(self, batch):
        # The teacher sees the student's view, in inference mode, without gradient.
        images = self._views(batch)[0]
        teacher_logits = self.state.teacher.logits(images)
        train = self.config.train
        labels, share = batch["label"], 1.0
        if train.distill_supervised_weight:
            # Replicas hold different labelled counts: weigh each replica's means by
            # its share so that their average is the global batch's.
            labelled = losses.labelled_weights(labels)
            count = tf.reduce_sum(labelled)
            share = tf.math.divide_no_nan(count, tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.MEAN, count))
        with tf.GradientTape() as tape:
            outputs = self.state.model(images, training=True)
            logits = tf.cast(outputs["logits_sup"], tf.float32)
            values = losses.distillation_objective(
                teacher_logits, logits, labels, train.distill_temperature,
                train.distill_supervised_weight, share)
            weight_decay = optimizers.weight_decay_loss(self.config, self.state.model)
            loss = values.pop("loss") + weight_decay
            scaled_loss = self._scaled_loss(loss)
        self._apply_gradients(tape, scaled_loss)
        if train.distill_supervised_weight:
            values["supervised_acc"] = share * metrics_lib.masked_accuracy(
                labels, logits, labelled)
        values.update(total_loss=loss, weight_decay=weight_decay, teacher_agreement=(
            metrics_lib.masked_accuracy(tf.argmax(teacher_logits, -1, output_type=tf.int32),
                                        logits)))
        return values

    def _views(self, batch):
        if self._device_augment is None:
            return batch["views"]
        return self._device_augment(batch)

    # -- the loop -----------------------------------------------------------------

    def _metric_names(self):
        names = ["total_loss", "weight_decay"]
        train = self.config.train
        if train.train_mode == "pretrain":
            names += ["contrast_loss", "contrast_acc", "contrast_entropy"]
        if train.train_mode == "distill":
            names += ["distill_loss", "teacher_agreement"]
        if self.state.model.supervised_head is not None and (
                train.train_mode != "distill" or train.distill_supervised_weight):
            names += ["supervised_loss", "supervised_acc"]
        return names

    def _make_loop(self):
        strategy, names = self.strategy, self._metric_names()

        @tf.function
        def loop(iterator, num_steps):
            """Runs num_steps steps; returns each metric's mean over them."""
            totals = {name: tf.constant(0.0) for name in names}
            for _ in tf.range(num_steps):
                per_replica = strategy.run(self._step_fn, args=(next(iterator),))
                totals = {name: totals[name] + strategy.reduce("MEAN", per_replica[name], axis=None)
                          for name in names}
            return {name: total / tf.cast(num_steps, tf.float32) for name, total in totals.items()}

        return loop

    def run(self):
        """Trains from the restored step to the last step; returns the last loop's metrics."""
        state, config = self.state, self.config
        start = state.restore_or_initialize()
        if start >= self.total_steps:
            logging.info("model_dir already holds step %d >= train_steps %d; nothing to train",
                         start, self.total_steps)
            return {}
        chief = strategy_lib.is_chief(self.strategy)
        dataset = input_pipeline.distributed_train_dataset(
            self.strategy, self.source, config, start)
        iterator = iter(dataset)
        loop = self._make_loop()
        summaries = progress_lib.Summaries(config.train.model_dir, enabled=chief)
        progress = progress_lib.Progress(config.train.train_mode, self.total_steps,
                                         config.train.train_batch_size, start)
        logging.info("%s: steps %d -> %d, %d steps per loop, checkpoint every %d steps, "
                     "%d replica(s), learning rate peak %.4g",
                     config.train.train_mode, start, self.total_steps, self.loop_steps,
                     self.checkpoint_every, self.strategy.num_replicas_in_sync,
                     config_lib.scaled_learning_rate(config))
        monitor = knn_monitor.KnnMonitor(state, self.source)
        curve = learning_curve.LearningCurve(config.train.model_dir, start, enabled=chief)
        epoch_steps = config_lib.epoch_steps(config, self.num_train)
        step, previous, values = start, start, {}
        with _SigtermFlag() as sigterm:
            while step < self.total_steps:
                to_checkpoint = self.checkpoint_every - step % self.checkpoint_every
                n = min(self.loop_steps, to_checkpoint, self.total_steps - step)
                values = {k: float(v) for k, v in loop(iterator, tf.constant(n)).items()}
                step = state.step
                if not all(math.isfinite(v) for v in values.values()):
                    raise TrainingDiverged(
                        f"the loss is not finite at step {step} ({values}); training stopped "
                        f"and the last good checkpoint ({state.checkpointer.latest}) is kept.")
                self.history.append((step, values))
                shown, monitored = dict(values), {}
                if monitor.due(step, previous, self.total_steps):
                    monitored = monitor.measure()
                    shown.update(monitored)
                    summaries.scalars(step, monitored, prefix="eval/")
                images_per_second = progress.log(step, shown)
                summaries.scalars(step, {
                    **{f"train/{k}": v for k, v in values.items()},
                    "train/images_per_second": images_per_second,
                    "learning_rate": float(state.learning_rate(step))})
                curve.record(step, step / epoch_steps, shown)
                previous = step
                if step % self.checkpoint_every == 0 or step == self.total_steps or sigterm.raised:
                    # The curve first: a kill between the two leaves it ahead of the
                    # checkpoint, and a resume drops the points after its step.
                    curve.save()
                    path = state.checkpointer.save()
                    logging.info("saved %s", path)
                if sigterm.raised:
                    raise Terminated(f"SIGTERM at step {step}; saved "
                                     f"{state.checkpointer.latest}; rerun the same command "
                                     "to resume.")
        picture = curve.write_png()
        if picture:
            logging.info("wrote %s", picture)
        return values
