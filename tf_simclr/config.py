"""The run configuration: frozen dataclasses whose field names are the flag names.

Every field of every group is one absl flag of `tf_simclr.run` with the same name,
meaning and (with the exceptions listed in README.md) default as the official
google-research/simclr `tf2/run.py`. Fields marked "ext" are our additions.
`run.py` turns flags into a `Config`; everything else receives a `Config` or one of
its groups and never reads flags. `Config.validate()` rejects contradictions with a
`ConfigError` that names the bad value and what was expected.
"""

import dataclasses
import json
import math
import os
from typing import Optional

from tf_simclr.errors import ConfigError

TRAIN_MODES = ("pretrain", "finetune")
MODES = ("train", "eval", "train_then_eval")
PROJ_HEAD_MODES = ("none", "linear", "nonlinear")
OPTIMIZERS = ("lars", "momentum", "adam", "adamw")
LR_SCALINGS = ("linear", "sqrt")
RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)
AUGMENT_ON = ("host", "device")
CROP_SAMPLERS = ("official", "paper")
COLOR_JITTER_IMPLS = ("simclrv2", "simclrv1")
BAD_IMAGE_POLICIES = ("error", "skip")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
MIN_IMAGE_SIZE = 16
CONFIG_FILENAME = "config.json"


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"--{name}={value!r} is not supported; expected one of "
                          f"{', '.join(repr(c) for c in choices)}.")


def _check_finite(group):
    """ConfigError for a NaN or infinite float field of a config group."""
    for field in dataclasses.fields(group):
        value = getattr(group, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{field.name}={value!r} is not a finite number; expected a "
                              "finite value.")


def _check_range(name, value, low=None, high=None, low_open=False):
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        bounds = (f"{'>' if low_open else '>='} {low}" if low is not None else "")
        if high is not None:
            bounds += (" and " if bounds else "") + f"<= {high}"
        raise ConfigError(f"--{name}={value!r} is out of range; expected a value {bounds}.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images come from and at which size the network sees them."""
    dataset: str = "imagenet2012"      # TFDS name, "fashion_mnist", or "image_folder"
    data_dir: Optional[str] = None     # TFDS data_dir, or the folder for image_folder
    train_split: str = "train"         # TFDS split syntax, e.g. "train[:10%]"
    eval_split: str = "validation"
    cache_dataset: bool = False
    image_size: int = 224              # <= 32 selects the CIFAR stem and no eval crop
    label_fraction: float = 1.0        # ext: stratified fraction of labelled train examples
    bad_images: str = "error"          # ext: image_folder files that fail to decode

    def validate(self):
        _check_finite(self)
        if not self.dataset:
            raise ConfigError("--dataset is empty; expected a TFDS name such as "
                              "'cifar10', 'fashion_mnist', or 'image_folder'.")
        if self.dataset == "image_folder" and not self.data_dir:
            raise ConfigError("--dataset=image_folder needs --data_dir=<folder of images>.")
        _check_range("image_size", self.image_size, low=MIN_IMAGE_SIZE)
        _check_range("label_fraction", self.label_fraction, low=0.0, high=1.0, low_open=True)
        _check_choice("bad_images", self.bad_images, BAD_IMAGE_POLICIES)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The SimCLR augmentation policy (paper §3 and Appendix A)."""
    color_jitter_strength: float = 1.0
    use_blur: bool = True
    color_jitter_impl: str = "simclrv2"  # ext: v2 multiplicative brightness, v1 additive
    crop_sampler: str = "official"        # ext: TF's sampler as the official code, or paper text
    augment_on: str = "host"              # ext: tf.data on the host, or inside the train step

    def validate(self):
        _check_finite(self)
        _check_range("color_jitter_strength", self.color_jitter_strength, low=0.0)
        _check_choice("color_jitter_impl", self.color_jitter_impl, COLOR_JITTER_IMPLS)
        _check_choice("crop_sampler", self.crop_sampler, CROP_SAMPLERS)
        _check_choice("augment_on", self.augment_on, AUGMENT_ON)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """ResNet encoder and heads."""
    resnet_depth: int = 50
    width_multiplier: float = 1.0      # official: integer; fractional widths for small runs
    sk_ratio: float = 0.0
    se_ratio: float = 0.0
    global_bn: bool = True
    batch_norm_decay: float = 0.9
    proj_head_mode: str = "nonlinear"
    proj_out_dim: int = 128
    num_proj_layers: int = 3
    ft_proj_selector: int = 0

    def validate(self):
        _check_finite(self)
        _check_choice("resnet_depth", self.resnet_depth, RESNET_DEPTHS)
        _check_range("width_multiplier", self.width_multiplier, low=0.0, low_open=True)
        if round(64 * self.width_multiplier) < 1:
            raise ConfigError(f"--width_multiplier={self.width_multiplier!r} leaves the stem "
                              "with no filters; expected 64 * width_multiplier >= 1.")
        _check_range("sk_ratio", self.sk_ratio, low=0.0, high=1.0)
        _check_range("se_ratio", self.se_ratio, low=0.0, high=1.0)
        _check_range("batch_norm_decay", self.batch_norm_decay, low=0.0, high=1.0)
        _check_choice("proj_head_mode", self.proj_head_mode, PROJ_HEAD_MODES)
        _check_range("proj_out_dim", self.proj_out_dim, low=1)
        _check_range("num_proj_layers", self.num_proj_layers, low=1)
        if self.proj_head_mode == "nonlinear":
            n_outputs = self.num_proj_layers
        elif self.proj_head_mode == "linear":
            n_outputs = 1
        else:
            n_outputs = 0
        if not -n_outputs - 1 <= self.ft_proj_selector <= n_outputs:
            raise ConfigError(
                f"--ft_proj_selector={self.ft_proj_selector} does not name a projection "
                f"layer; with --proj_head_mode={self.proj_head_mode} and "
                f"--num_proj_layers={self.num_proj_layers} expected a value in "
                f"[{-n_outputs - 1}, {n_outputs}].")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """NT-Xent."""
    temperature: float = 0.1
    hidden_norm: bool = True

    def validate(self):
        _check_finite(self)
        _check_range("temperature", self.temperature, low=0.0, low_open=True)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer, weight decay and learning-rate schedule."""
    optimizer: str = "lars"
    learning_rate: float = 0.3          # per 256 images (linear) or per sqrt(batch) (sqrt)
    learning_rate_scaling: str = "linear"
    warmup_epochs: float = 10.0
    weight_decay: float = 1e-6
    momentum: float = 0.9

    def validate(self):
        _check_finite(self)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_range("learning_rate", self.learning_rate, low=0.0)
        _check_choice("learning_rate_scaling", self.learning_rate_scaling, LR_SCALINGS)
        _check_range("warmup_epochs", self.warmup_epochs, low=0.0)
        _check_range("weight_decay", self.weight_decay, low=0.0)
        _check_range("momentum", self.momentum, low=0.0, high=1.0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What the run does, for how long, and where it keeps its state."""
    train_mode: str = "pretrain"
    mode: str = "train"
    model_dir: Optional[str] = None
    train_batch_size: int = 512
    train_epochs: int = 100
    train_steps: int = 0                # overrides train_epochs when > 0
    eval_batch_size: int = 256
    eval_steps: int = 0                 # 0: the whole eval split
    lineareval_while_pretraining: bool = True
    checkpoint: Optional[str] = None    # finetune source: a checkpoint prefix or a model_dir
    finetune_from_scratch: bool = False  # ext: finetune with no --checkpoint (baselines)
    zero_init_logits_layer: bool = False
    fine_tune_after_block: int = -1     # -1: all; 0: after the stem; 4: linear head only
    checkpoint_epochs: int = 1
    checkpoint_steps: int = 0           # overrides checkpoint_epochs when > 0
    keep_checkpoint_max: int = 5
    keep_hub_module_max: int = 1        # 0: no SavedModel export after eval
    steps_per_loop: int = 0             # ext: steps per tf.function call; 0: auto
    linear_eval_epochs: int = 0         # ext: frozen-encoder linear eval after pretraining
    linear_eval_learning_rate: float = 0.1  # ext: its learning rate (momentum, linear scaling)
    seed: int = 0                       # ext: weights, data order and augmentation
    precision: str = "float32"          # ext: Keras dtype policy
    eval_name: Optional[str] = None     # accepted for compatibility; unused as in TF2

    def validate(self):
        _check_finite(self)
        _check_choice("train_mode", self.train_mode, TRAIN_MODES)
        _check_choice("mode", self.mode, MODES)
        if not self.model_dir:
            raise ConfigError("--model_dir is not set; expected a directory for "
                              "checkpoints, summaries and config.json.")
        _check_range("train_batch_size", self.train_batch_size, low=1)
        _check_range("eval_batch_size", self.eval_batch_size, low=1)
        _check_range("train_epochs", self.train_epochs, low=0)
        _check_range("train_steps", self.train_steps, low=0)
        if self.train_steps == 0 and self.train_epochs == 0 and self.mode != "eval":
            raise ConfigError("--train_steps=0 and --train_epochs=0: nothing to train; "
                              "expected one of them > 0.")
        _check_range("eval_steps", self.eval_steps, low=0)
        _check_range("checkpoint_epochs", self.checkpoint_epochs, low=0)
        _check_range("checkpoint_steps", self.checkpoint_steps, low=0)
        _check_range("keep_checkpoint_max", self.keep_checkpoint_max, low=1)
        _check_range("keep_hub_module_max", self.keep_hub_module_max, low=0)
        _check_range("steps_per_loop", self.steps_per_loop, low=0)
        _check_range("linear_eval_epochs", self.linear_eval_epochs, low=0)
        _check_range("linear_eval_learning_rate", self.linear_eval_learning_rate, low=0.0)
        _check_range("fine_tune_after_block", self.fine_tune_after_block, low=-1, high=4)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.train_mode == "finetune":
            if self.mode != "eval" and not self.checkpoint and not self.finetune_from_scratch:
                raise ConfigError(
                    "--train_mode=finetune needs --checkpoint=<pretrain checkpoint or "
                    "model_dir>; to train from random weights on purpose (a baseline), "
                    "pass --finetune_from_scratch.")
            if self.checkpoint and self.finetune_from_scratch:
                raise ConfigError(f"--finetune_from_scratch contradicts "
                                  f"--checkpoint={self.checkpoint!r}; expected one of them.")
            if self.linear_eval_epochs:
                raise ConfigError("--linear_eval_epochs applies to --train_mode=pretrain; "
                                  "a finetune run is itself the evaluation.")
        else:
            if self.fine_tune_after_block != -1:
                raise ConfigError(
                    f"--fine_tune_after_block={self.fine_tune_after_block} applies to "
                    "--train_mode=finetune; expected -1 for pretraining.")
            if self.finetune_from_scratch:
                raise ConfigError("--finetune_from_scratch applies to --train_mode=finetune.")


@dataclasses.dataclass(frozen=True)
class HardwareConfig:
    """Which tf.distribute strategy runs the job."""
    use_tpu: bool = False               # official default True; see README
    tpu_name: Optional[str] = None
    tpu_zone: Optional[str] = None
    gcp_project: Optional[str] = None
    master: Optional[str] = None
    cpu_replicas: int = 0               # ext: >1 splits the CPU into logical devices (tests)

    def validate(self):
        _check_finite(self)
        _check_range("cpu_replicas", self.cpu_replicas, low=0)
        if self.use_tpu and self.cpu_replicas:
            raise ConfigError("--use_tpu contradicts --cpu_replicas; expected one of them.")


_GROUPS = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "hardware": HardwareConfig,
}


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole run: one frozen group per concern."""
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    hardware: HardwareConfig = HardwareConfig()

    def validate(self):
        """Raises ConfigError for the first bad value; returns self otherwise."""
        for group in _GROUPS:
            getattr(self, group).validate()
        if self.train.precision == "mixed_float16" and self.optim.optimizer == "lars":
            # LARS trust ratios of fp16 gradients need loss scaling that LARS would
            # then divide out again; bfloat16 needs none.
            raise ConfigError("--precision=mixed_float16 is not supported with "
                              "--optimizer=lars; expected --precision=mixed_bfloat16.")
        return self

    @property
    def cifar_stem(self):
        """The official switch: 32 px and below use a 3x3/1 stem without max-pool."""
        return self.data.image_size <= 32

    def replace(self, **fields):
        """A copy with the named flag fields changed, e.g. replace(train_steps=5)."""
        changes = {}
        for name, value in fields.items():
            group = group_of(name)
            changes.setdefault(group, {})[name] = value
        return dataclasses.replace(self, **{
            group: dataclasses.replace(getattr(self, group), **values)
            for group, values in changes.items()})

    def flat(self):
        """{flag name: value} over all groups."""
        return {f.name: getattr(getattr(self, group), f.name)
                for group, cls in _GROUPS.items() for f in dataclasses.fields(cls)}

    def to_json(self):
        return json.dumps({group: dataclasses.asdict(getattr(self, group))
                           for group in _GROUPS}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """Inverse of to_json; unknown keys are an error, missing ones take defaults."""
        raw = json.loads(text)
        unknown = set(raw) - set(_GROUPS)
        if unknown:
            raise ConfigError(f"config JSON has unknown groups {sorted(unknown)}; "
                              f"expected {sorted(_GROUPS)}.")
        groups = {}
        for group, group_cls in _GROUPS.items():
            values = raw.get(group, {})
            names = {f.name for f in dataclasses.fields(group_cls)}
            bad = set(values) - names
            if bad:
                raise ConfigError(f"config JSON group {group!r} has unknown fields "
                                  f"{sorted(bad)}.")
            groups[group] = group_cls(**values)
        return cls(**groups)

    @classmethod
    def from_flat(cls, values):
        """A Config from {flag name: value}; names that are not fields are ignored."""
        groups = {}
        for group, group_cls in _GROUPS.items():
            names = {f.name for f in dataclasses.fields(group_cls)}
            groups[group] = group_cls(**{k: v for k, v in values.items() if k in names})
        return cls(**groups)


def group_of(name):
    """The group that owns flag `name`."""
    for group, cls in _GROUPS.items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return group
    raise ConfigError(f"{name!r} is not a tf_simclr flag.")


def field_names():
    """Every flag name, in group order."""
    return [f.name for cls in _GROUPS.values() for f in dataclasses.fields(cls)]


def write_atomically(path, text):
    """Writes `text` to `path` under a temporary name and renames it into place, so
    a reader (or a resumed run after a kill) never sees a partial file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def save(config, directory):
    """Writes config.json into `directory` atomically; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CONFIG_FILENAME)
    write_atomically(path, config.to_json())
    return path


def load(directory):
    """Reads config.json from a model_dir written by `save`."""
    path = os.path.join(directory, CONFIG_FILENAME)
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist; expected a model_dir written by "
                          "tf_simclr.run (it saves config.json there).")
    with open(path, encoding="utf-8") as f:
        return Config.from_json(f.read())


# Derived quantities -------------------------------------------------------------

def train_steps(config, num_train_examples):
    """Official: train_steps or num_train * train_epochs // batch + 1."""
    if config.train.train_steps:
        return config.train.train_steps
    return num_train_examples * config.train.train_epochs // config.train.train_batch_size + 1


def epoch_steps(config, num_train_examples):
    """Official: round(num_train / batch), at least 1."""
    return max(1, int(round(num_train_examples / config.train.train_batch_size)))


def checkpoint_steps(config, num_train_examples):
    """Official: checkpoint_steps or checkpoint_epochs * epoch_steps, at least 1."""
    if config.train.checkpoint_steps:
        return config.train.checkpoint_steps
    return max(1, config.train.checkpoint_epochs * epoch_steps(config, num_train_examples))


def eval_steps(config, num_eval_examples):
    """Official: eval_steps or ceil(num_eval / eval_batch)."""
    if config.train.eval_steps:
        return config.train.eval_steps
    return int(math.ceil(num_eval_examples / config.train.eval_batch_size))


def warmup_steps(config, num_train_examples):
    """Official: int(round(warmup_epochs * num_train // batch))."""
    return int(round(config.optim.warmup_epochs * num_train_examples
                     // config.train.train_batch_size))


def scaled_learning_rate(config):
    """Official: lr * batch / 256 (linear) or lr * sqrt(batch) (sqrt)."""
    batch = config.train.train_batch_size
    if config.optim.learning_rate_scaling == "linear":
        return config.optim.learning_rate * batch / 256.0
    return config.optim.learning_rate * math.sqrt(batch)
