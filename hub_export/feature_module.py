"""Loading an image feature-vector SavedModel as a probe encoder.

Any TF2 SavedModel whose call maps float32 images [b, H, W, 3] in [0, 1] to
features [b, D] works: ours (see `module`), or another project's. Our modules
carry `image_size` (the training resolution); for others the input size comes
from the traced signatures when they fix one. A module made for another size is
refused before any image is read.
"""

import os

import tensorflow as tf

from tf_simclr.errors import ConfigError
from tf_simclr.probe import encoders

SAVED_MODEL_FILE = "saved_model.pb"


def _fixed_input_sizes(obj):
    """{(H, W)} fixed by the traced signatures of obj.__call__ (empty if none fix one)."""
    sizes = set()
    for function in getattr(obj.__call__, "concrete_functions", []):
        args = function.structured_input_signature[0]
        if args and isinstance(args[0], tf.TensorSpec) and args[0].shape.rank == 4:
            height, width = args[0].shape[1:3]
            if height is not None and width is not None:
                sizes.add((height, width))
    return sizes


def _input_size_error(path, module_size, image_size):
    return ConfigError(
        f"--hub_module={path} takes {module_size[0]}x{module_size[1]} images but "
        f"--image_size={image_size}; expected --image_size={module_size[0]}.")


def load(path, image_size):
    """encode(images float32 [b, S, S, 3]) -> float32 [b, D] of the module at `path`.

    ConfigError when `path` is not a SavedModel or was made for another input size.
    """
    if not tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
        raise ConfigError(f"--hub_module={path} is not a SavedModel (no {SAVED_MODEL_FILE} "
                          "there); expected the directory of an exported module.")
    obj = tf.saved_model.load(path)
    if hasattr(obj, "image_size"):
        trained = int(obj.image_size.numpy())
        if trained != image_size:
            raise _input_size_error(path, (trained, trained), image_size)
    else:
        sizes = _fixed_input_sizes(obj)
        if sizes and (image_size, image_size) not in sizes:
            raise _input_size_error(path, sorted(sizes)[0], image_size)

    def encode(images):
        try:
            outputs = obj(images, training=False)
        except (TypeError, ValueError):  # a module traced without a training argument
            outputs = obj(images)
        if isinstance(outputs, dict):
            outputs = outputs.get("default", outputs.get(encoders.FEATURES))
        return tf.cast(outputs, tf.float32)

    return encode


def hub_encoder(path, image_size, name="hub_module"):
    """The probe Encoder of the module at `path` (keyed by its path and mtime)."""
    pb = os.path.join(path, SAVED_MODEL_FILE)
    stamp = os.path.getmtime(pb) if os.path.exists(pb) else 0
    return encoders.Encoder(name, f"hub module {os.path.abspath(path)} mtime {stamp}",
                            lambda: load(path, image_size))
