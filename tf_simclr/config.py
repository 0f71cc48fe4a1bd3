"""The run configuration: frozen dataclasses whose field names are the flag names.

Every field of every group is one absl flag of `tf_simclr.run` with the same name,
meaning and (with the exceptions listed in README.md) default as the official
google-research/simclr `tf2/run.py`; help texts marked "[ext]" are our additions.
The groups, their fields (type, default, help text, choices) and their checks are in
`tf_simclr.config_groups`; this module re-exports them and is the one to import.
`run.py` turns flags into a `Config`; everything else receives a `Config` or one of
its groups and never reads flags. `Config.validate()` rejects contradictions with a
`ConfigError` that names the bad value and what was expected. Free of TensorFlow.
"""

import dataclasses
import json
import math
import os

from tf_simclr.config_groups import (
    AUGMENT_ON,
    BAD_IMAGE_POLICIES,
    COLOR_JITTER_IMPLS,
    CROP_SAMPLERS,
    DEFAULT_CROP_MIN_AREA,
    LR_SCALINGS,
    MIN_IMAGE_SIZE,
    MODES,
    OPTIMIZERS,
    PRECISIONS,
    PROBE_MODES,
    PROJ_HEAD_MODES,
    RESNET_DEPTHS,
    TRAIN_MODES,
    AugmentConfig,
    DataConfig,
    HardwareConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ProbeConfig,
    TrainConfig,
)
from tf_simclr.errors import ConfigError

__all__ = [
    # Choice sets of the enum flags (and the ResNet depths), and limits.
    "AUGMENT_ON", "BAD_IMAGE_POLICIES", "COLOR_JITTER_IMPLS", "CROP_SAMPLERS",
    "DEFAULT_CROP_MIN_AREA",
    "LR_SCALINGS", "MIN_IMAGE_SIZE", "MODES", "OPTIMIZERS", "PRECISIONS",
    "PROBE_MODES", "PROJ_HEAD_MODES", "RESNET_DEPTHS", "TRAIN_MODES",
    "CONFIG_FILENAME", "LINEAR_EVAL_DIRNAME",
    # The configuration and its groups.
    "AugmentConfig", "Config", "ConfigError", "DataConfig", "HardwareConfig", "LossConfig",
    "ModelConfig", "OptimConfig", "ProbeConfig", "TrainConfig",
    "field_names", "flag_fields", "group_of", "load", "save", "write_atomically",
    # The linear-evaluation recipe and derived quantities.
    "linear_eval_config", "linear_eval_overrides",
    "checkpoint_steps", "epoch_steps", "eval_steps", "scaled_learning_rate", "train_steps",
    "warmup_steps",
]

CONFIG_FILENAME = "config.json"
LINEAR_EVAL_DIRNAME = "linear_eval"


_GROUPS = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "probe": ProbeConfig,
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
    probe: ProbeConfig = ProbeConfig()
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
        if self.train.deterministic and self.hardware.use_tpu:
            # Verified on CPUs only (tf_simclr.train.determinism).
            raise ConfigError("--deterministic is not supported with --use_tpu; expected a "
                              "CPU run (one device or --cpu_replicas).")
        return self

    @property
    def trains_classifier(self):
        """Fine-tuning and distillation train the classifier model (one view, crop and
        flip); pretraining trains the contrastive one."""
        return self.train.train_mode in ("finetune", "distill")

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


def flag_fields():
    """Every flag's dataclass field (name, type, default, metadata help and choices),
    in group order."""
    return [f for cls in _GROUPS.values() for f in dataclasses.fields(cls)]


def field_names():
    """Every flag name, in group order."""
    return [f.name for f in flag_fields()]


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


# A student's default architecture --------------------------------------------------

ARCHITECTURE_FIELDS = ("resnet_depth", "width_multiplier", "sk_ratio", "se_ratio")


def teacher_architecture(teacher):
    """{field: value} of the ResNet (depth, width, SK, SE) of a --teacher that is a
    model_dir or checkpoint of ours, the student's default; {} for a SavedModel or a
    path without config.json (the teacher's loader then says what is wrong)."""
    directory = teacher if os.path.isdir(teacher) else os.path.dirname(teacher)
    if not os.path.exists(os.path.join(directory, CONFIG_FILENAME)):
        return {}
    model = load(directory).model
    return {name: getattr(model, name) for name in ARCHITECTURE_FIELDS}


# The linear-evaluation recipe ------------------------------------------------------

def linear_eval_overrides(pretrain_config):
    """{flag: value} of the official linear-evaluation recipe for a pretraining run.

    Frozen encoder (fine_tune_after_block=4, BatchNorm in inference mode), a
    zero-initialised linear head on the encoder output, momentum optimizer without
    weight decay or warmup, crop+flip augmentation only (official finetune input),
    in model_dir/linear_eval from the run's model_dir. flags/*_linear_eval.cfg give
    the same recipe as flagfiles (tests/test_config.py keeps them in agreement).
    """
    train = pretrain_config.train
    return dict(
        train_mode="finetune", mode="train_then_eval",
        model_dir=os.path.join(train.model_dir, LINEAR_EVAL_DIRNAME),
        checkpoint=train.model_dir, fine_tune_after_block=4, zero_init_logits_layer=True,
        ft_proj_selector=0, global_bn=False, optimizer="momentum",
        learning_rate=train.linear_eval_learning_rate, learning_rate_scaling="linear",
        weight_decay=0.0, warmup_epochs=0.0, train_epochs=train.linear_eval_epochs,
        train_steps=0, checkpoint_steps=0, checkpoint_epochs=train.linear_eval_epochs,
        linear_eval_epochs=0)


def linear_eval_config(pretrain_config):
    """The linear-evaluation run of a pretraining run: its config with the recipe."""
    return pretrain_config.replace(**linear_eval_overrides(pretrain_config))


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
