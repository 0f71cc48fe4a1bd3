"""Child process: gradients of one fine-tuning step of tf_simclr's model at given batches.

    python train_step_gradients.py OUT.npz WIDTH IMAGE_SIZE BATCH [BATCH ...]

Builds the SimCLR model (ResNet-18, fine-tuning mode, every layer trainable) with a
fixed seed, and for each batch size computes d(cross-entropy + weight decay)/d(every
trainable variable) on fixed images in training mode (BatchNorm on batch statistics),
which is what a training step applies. Writes `<batch>/<variable path>` arrays to
OUT.npz. oneDNN is whatever TF_ENABLE_ONEDNN_OPTS says, so the parent can compare a
oneDNN-on child with a oneDNN-off one; a crash is the child's exit status.
"""

import sys

import keras
import numpy as np
import tensorflow as tf

from tf_simclr import config as config_lib
from tf_simclr.models import simclr as model_lib
from tf_simclr.train import losses, optimizers

NUM_CLASSES = 10


def main(out_path, width, image_size, *batches):
    keras.utils.set_random_seed(0)
    config = config_lib.Config().replace(
        resnet_depth=18, width_multiplier=float(width), image_size=int(image_size),
        train_mode="finetune", fine_tune_after_block=-1, global_bn=False)
    model = model_lib.build_model(config, NUM_CLASSES)
    arrays = {}
    for batch in map(int, batches):
        rng = np.random.default_rng(batch)
        images = tf.constant(rng.random((batch, int(image_size), int(image_size), 3), np.float32))
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
