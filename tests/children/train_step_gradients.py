"""Child process: gradients of one fine-tuning step of tf_simclr's model at given batches.

    python train_step_gradients.py OUT.npz DTYPE WIDTH IMAGE_SIZE BATCH [BATCH ...]

Builds the SimCLR model (ResNet-18, fine-tuning mode, every layer trainable) with a
fixed seed, and for each batch size computes d(cross-entropy + weight decay)/d(every
trainable variable) on fixed images in training mode (BatchNorm on batch statistics),
which is what a training step applies. Writes `<batch>/<variable path>` arrays to
OUT.npz. DTYPE float32 is what training runs; float64 runs the same initial weights
and images in float64 (Eigen: oneDNN has no float64), the exact maths the parent
measures each float32 backend against. oneDNN is whatever TF_ENABLE_ONEDNN_OPTS says;
a crash is the child's exit status.
"""

import sys
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from tf_simclr import config as config_lib
from tf_simclr import config_groups
from tf_simclr.models import simclr as model_lib
from tf_simclr.train import losses, optimizers

NUM_CLASSES = 10


def _model(config, dtype, image_size):
    """The float32 model of seed 0, or a float64 copy of its initial weights."""
    keras.utils.set_random_seed(0)
    model = model_lib.build_model(config, NUM_CLASSES)
    if dtype == "float32":
        return model
    model(tf.zeros([1, image_size, image_size, 3]))
    # float64 is no training precision (the flag refuses it); only this reference uses it.
    with mock.patch.object(config_groups, "PRECISIONS", config_groups.PRECISIONS + (dtype,)):
        copy = model_lib.build_model(config.replace(precision=dtype), NUM_CLASSES)
    copy(tf.zeros([1, image_size, image_size, 3], dtype))
    for source, target in zip(model.weights, copy.weights, strict=True):
        assert source.path == target.path, (source.path, target.path)
        target.assign(tf.cast(source, dtype))
    return copy


def main(out_path, dtype, width, image_size, *batches):
    image_size = int(image_size)
    config = config_lib.Config().replace(
        resnet_depth=18, width_multiplier=float(width), image_size=image_size,
        train_mode="finetune", fine_tune_after_block=-1, global_bn=False)
    model = _model(config, dtype, image_size)
    arrays = {}
    for batch in map(int, batches):
        rng = np.random.default_rng(batch)
        images = tf.constant(rng.random((batch, image_size, image_size, 3), np.float32), dtype)
        labels = tf.constant(rng.integers(0, NUM_CLASSES, batch), tf.int32)
        with tf.GradientTape() as tape:
            logits = model(images, training=True)["logits_sup"]
            loss = (losses.supervised_loss(labels, logits)
                    + optimizers.weight_decay_loss(config, model))
        gradients = tape.gradient(loss, model.trainable_variables)
        for variable, gradient in zip(model.trainable_variables, gradients):
            arrays[f"{batch}/{variable.path}"] = gradient.numpy()
        arrays[f"{batch}/loss"] = loss.numpy()
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
