"""What the probe evaluates: an `Encoder` maps eval-preprocessed images to features.

`Encoder(name, key, build)`: `build()` runs inside the strategy scope and returns
`encode(images float32 [b, S, S, 3] in [0, 1]) -> features [b, D]`, called in
inference mode (BatchNorm on its moving statistics). `key` identifies the weights,
so cached features are reused only for the same ones.

- `from_checkpoint`: the encoder of a tf_simclr run (final_avg_pool, the
  representation the hub module exports), from its latest or a given checkpoint;
- `from_model`: the same, of a model in memory (the job probes what it trained);
- `random_encoder`: the same architecture with random weights (a baseline);
- `pixels`: the images themselves, flattened (a baseline);
- a hub module's encoder comes from the entry point (hub_export loads it).
"""

import dataclasses
from typing import Callable

import keras
import tensorflow as tf

from tf_simclr.models import simclr as model_lib
from tf_simclr.train import checkpointing

FEATURES = "final_avg_pool"


@dataclasses.dataclass(frozen=True)
class Encoder:
    """`name` labels results; `key` identifies the features; `build() -> encode`."""
    name: str
    key: str
    build: Callable


def _architecture(config):
    model = config.model
    return (f"resnet{model.resnet_depth} width {model.width_multiplier} sk "
            f"{model.sk_ratio} se {model.se_ratio} at {config.data.image_size} px")


def _encoder_model(config):
    """A built model of `config`'s encoder (with a pretraining head, no classifier)."""
    model = model_lib.build_model(
        config.replace(train_mode="pretrain", fine_tune_after_block=-1), 0)
    size = config.data.image_size
    model(tf.zeros([1, size, size, 3]), training=False)
    return model


def _model_encode(model):
    return lambda images: model(images, training=False)[FEATURES]


def from_checkpoint(config, checkpoint, flag="--checkpoint", name="simclr"):
    """The encoder of `config`'s model with the weights of checkpoint prefix or dir
    `checkpoint` (CheckpointError naming `flag` when there is none)."""
    path = checkpointing.resolve(checkpoint, flag)

    def build():
        model = _encoder_model(config)
        checkpointing.restore(path, "encoder variable of the model in its config.json",
                              model=tf.train.Checkpoint(encoder=model.encoder))
        return _model_encode(model)

    return Encoder(name, f"checkpoint {path} {_architecture(config)}", build)


def from_model(model, key, name="simclr"):
    """The encoder of a SimCLRModel in memory (built under the probe's strategy)."""
    return Encoder(name, key, lambda: _model_encode(model))


def random_encoder(config, seed, name="random"):
    """`config`'s architecture with random weights drawn from `seed`."""

    def build():
        keras.utils.set_random_seed(seed)
        model = _encoder_model(config)
        return _model_encode(model)

    return Encoder(name, f"random seed {seed} {_architecture(config)}", build)


def pixels(config, name="pixels"):
    """The eval-preprocessed images, flattened: float32 [b, S * S * 3]."""

    def build():
        return lambda images: tf.reshape(images, [tf.shape(images)[0], -1])

    return Encoder(name, f"pixels at {config.data.image_size} px", build)


def baselines(config):
    """[raw pixels, `config`'s architecture with random weights from its --seed]."""
    return [pixels(config), random_encoder(config, config.train.seed)]
