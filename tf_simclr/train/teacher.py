"""The fixed teacher of `--train_mode=distill`: class scores of a fine-tuned model.

`--teacher` is a model_dir or checkpoint prefix of ours (also an import of official
weights: `tf_simclr.import_official`), rebuilt from its config.json, or a
SavedModel with a `logits_sup` output (our hub modules, the official TF2
SavedModels). The teacher runs in inference mode (BatchNorm on its moving
statistics) under the student's strategy; its variables are not trainable, not
in the student's optimizer or checkpoint, and its logits pass a stop_gradient.
"""

import os

import tensorflow as tf

from tf_simclr import config as config_lib
from tf_simclr.errors import CheckpointError, ConfigError
from tf_simclr.models import simclr as model_lib
from tf_simclr.train import checkpointing

LOGITS = "logits_sup"


class Teacher:
    """`logits(images [B,H,W,3] in [0,1]) -> [B, num_classes]` float32 of a fixed model;
    `model` is the Keras model (or the loaded SavedModel) that computes them."""

    def __init__(self, path, num_classes, image_size, strategy):
        with strategy.scope():
            if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
                self.model, self._logits, found = _saved_model_teacher(path, image_size)
            else:
                self.model, self._logits, found = _checkpoint_teacher(path, image_size)
        if found != num_classes:
            raise ConfigError(f"--teacher={path} predicts {found} classes; the data has "
                              f"{num_classes}: expected a teacher fine-tuned on the same "
                              "classes.")
        self.num_classes = found

    def logits(self, images):
        return tf.stop_gradient(tf.cast(self._logits(images), tf.float32))


def _checkpoint_teacher(path, image_size):
    directory = path if tf.io.gfile.isdir(path) else os.path.dirname(path)
    try:
        config = config_lib.load(directory)
    except config_lib.ConfigError:
        raise CheckpointError(f"--teacher={path} has no config.json beside it; expected a "
                              "model_dir of tf_simclr (fine-tuned), a checkpoint in one, "
                              "or a SavedModel with logits_sup.") from None
    prefix = checkpointing.resolve(path, "--teacher")
    num_classes = checkpointing.num_classes_in_checkpoint(prefix)
    if num_classes == 0:
        raise CheckpointError(f"--teacher={path} has no classifier (no supervised head in "
                              f"{prefix}); expected a fine-tuned model_dir or checkpoint.")
    teacher_config = config.replace(train_mode="finetune", fine_tune_after_block=-1,
                                    image_size=image_size)
    if teacher_config.cifar_stem != config.cifar_stem:
        raise ConfigError(f"--teacher={path} was trained at {config.data.image_size} px "
                          f"({'CIFAR' if config.cifar_stem else 'ImageNet'} stem); "
                          f"--image_size={image_size} selects the other stem: expected "
                          "both sizes above 32 or both at most 32.")
    model = model_lib.build_model(teacher_config, num_classes)
    checkpointing.restore(prefix, "variable of the teacher model in its config.json",
                          model=model)
    model.trainable = False
    return model, (lambda images: model(images, training=False)[LOGITS]), num_classes


def _saved_model_teacher(path, image_size):
    loaded = tf.saved_model.load(path)
    if hasattr(loaded, "serve"):  # our hub modules
        call = loaded.serve
    else:  # the official TF2 SavedModel: __call__(images, trainable)
        def call(images):
            return loaded(images, trainable=False)
    probe = call(tf.zeros([1, image_size, image_size, 3]))
    if not isinstance(probe, dict) or LOGITS not in probe:
        outputs = sorted(probe) if isinstance(probe, dict) else "a single tensor"
        raise CheckpointError(f"--teacher={path} is a SavedModel without a {LOGITS} output "
                              f"(outputs: {outputs}); expected a fine-tuned module with a "
                              "classifier.")
    return loaded, (lambda images: call(images)[LOGITS]), int(probe[LOGITS].shape[-1])
