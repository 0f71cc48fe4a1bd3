"""Child process: gradients of one training step through an exported hub module.

    python hub_train_step_gradients.py OUT.npz MODULE_DIR IMAGE_SIZE BATCH [BATCH ...]

Loads MODULE_DIR with `hub.KerasLayer(trainable=True)` under tf_keras (as a user
fine-tuning the module does) and, for each batch size, computes d mean(features^2) /
d(every trainable variable of the module) on fixed images with training=True. Writes
`<batch>/<index>` arrays to OUT.npz. oneDNN is whatever TF_ENABLE_ONEDNN_OPTS says.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402


def main(out_path, module_dir, image_size, *batches):
    layer = hub.KerasLayer(module_dir, trainable=True)
    size = int(image_size)
    arrays = {}
    for batch in map(int, batches):
        images = tf.constant(np.random.default_rng(batch).random((batch, size, size, 3),
                                                                 np.float32))
        with tf.GradientTape() as tape:
            features = layer(images, training=True)
            loss = tf.reduce_mean(tf.square(features))
        gradients = tape.gradient(loss, layer.trainable_variables)
        for index, gradient in enumerate(gradients):
            arrays[f"{batch}/{index}"] = tf.convert_to_tensor(gradient).numpy()
        arrays[f"{batch}/loss"] = loss.numpy()
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
