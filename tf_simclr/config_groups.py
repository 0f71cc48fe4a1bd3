"""The eight flag groups of a run, each field one absl flag declared once.

A field carries its flag's type, default, help text and (for enums) choices, the
help and choices in `field.metadata["help"]` and `field.metadata["choices"]`;
`run.define_flags` builds every flag from them. Help texts starting with "[ext]"
mark our additions to the official flags. The choice tuples are defined here for
the fields and validation; import them (and the groups) from `tf_simclr.config`,
the public module that re-exports this one and assembles the groups into `Config`.
Each group's `validate()` raises a `ConfigError` for its first bad value.
"""

import dataclasses
import math
from typing import Optional

from tf_simclr.errors import ConfigError

TRAIN_MODES = ("pretrain", "finetune", "distill")
MODES = ("train", "eval", "train_then_eval")
PROJ_HEAD_MODES = ("none", "linear", "nonlinear")
OPTIMIZERS = ("lars", "momentum", "adam", "adamw")
LR_SCALINGS = ("linear", "sqrt")
RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)
AUGMENT_ON = ("host", "device")
CROP_SAMPLERS = ("official", "paper")
DEFAULT_CROP_MIN_AREA = 0.08  # official and paper
COLOR_JITTER_IMPLS = ("simclrv2", "simclrv1")
BAD_IMAGE_POLICIES = ("error", "skip")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
PROBE_MODES = ("none", "encoder", "baselines")
MIN_IMAGE_SIZE = 16


def _flag(default, help, choices=None):
    """A dataclass field that is also a flag: its default, help text and choices."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


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
    dataset: str = _flag(
        "imagenet2012",
        "Name of a TFDS image-classification dataset (e.g. cifar10, imagenet2012, "
        "stl10, fashion_mnist), or image_folder to read --data_dir as a folder of "
        "images (labelled by sub-folder, or a flat unlabeled folder).")
    data_dir: Optional[str] = _flag(
        None, "TFDS data directory, or the folder of images for --dataset=image_folder.")
    train_split: str = _flag(
        "train", "Split for training, in TFDS split syntax (e.g. train, train[:10%]).")
    eval_split: str = _flag("validation", "Split for evaluation.")
    cache_dataset: bool = _flag(False, "Whether to cache the decoded dataset in memory.")
    image_size: int = _flag(
        224, "Input image size. 32 and below select the CIFAR stem (3x3 stride-1 "
        "conv, no max-pool) and no crop at eval.")
    label_fraction: float = _flag(
        1.0, "[ext] Train on a stratified fraction of the labelled train split "
        "(same fraction of every class, chosen by --seed), for 1%/10% "
        "semi-supervised fine-tuning. With --train_mode=distill every train image is "
        "read and only the labels of the others are hidden.")
    bad_images: str = _flag(
        "error", "[ext] image_folder files that cannot be decoded: error (refuse to "
        "start, listing them) or skip (leave them out and report the count).",
        BAD_IMAGE_POLICIES)

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
    color_jitter_strength: float = _flag(
        1.0, "The strength s of color jittering (brightness, contrast and "
        "saturation 0.8s, hue 0.2s).")
    use_blur: bool = _flag(
        True, "Whether or not to use Gaussian blur for augmentation during pretraining.")
    color_jitter_impl: str = _flag(
        "simclrv2", "[ext] simclrv2: multiplicative brightness (official default); "
        "simclrv1: additive brightness.", COLOR_JITTER_IMPLS)
    crop_sampler: str = _flag(
        "official", "[ext] official: TF's sample_distorted_bounding_box as the official "
        "code (uniform aspect, uniform height, area >= 0.1); paper: area "
        "uniform in (0.08, 1), log-uniform aspect.", CROP_SAMPLERS)
    crop_min_area: float = _flag(
        DEFAULT_CROP_MIN_AREA, "[ext] The smallest random crop as a fraction of the image "
        "area (the official 0.08; the official sampler's 10% coverage rule makes values "
        "below 0.1 act as 0.1). Larger keeps more of full-frame objects (Fashion-MNIST).")
    augment_on: str = _flag(
        "host", "[ext] Where to run the augmentation: host (tf.data) or device (inside "
        "the train step; vectorized with static shapes on TPUs and GPUs).", AUGMENT_ON)

    def validate(self):
        _check_finite(self)
        _check_range("color_jitter_strength", self.color_jitter_strength, low=0.0)
        _check_choice("color_jitter_impl", self.color_jitter_impl, COLOR_JITTER_IMPLS)
        _check_choice("crop_sampler", self.crop_sampler, CROP_SAMPLERS)
        _check_range("crop_min_area", self.crop_min_area, low=0.0, high=1.0, low_open=True)
        _check_choice("augment_on", self.augment_on, AUGMENT_ON)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """ResNet encoder and heads."""
    # An integer flag (not an enum, as in the official code), checked by validate().
    resnet_depth: int = _flag(50, "Depth of ResNet.", RESNET_DEPTHS)
    width_multiplier: float = _flag(
        1.0, "Multiplier to change width of network (fractional widths allowed).")
    sk_ratio: float = _flag(
        0.0, "If it is bigger than 0, it will enable SK. Recommendation: 0.0625.")
    se_ratio: float = _flag(0.0, "If it is bigger than 0, it will enable SE.")
    global_bn: bool = _flag(
        True, "Whether to aggregate BN statistics across distributed cores.")
    batch_norm_decay: float = _flag(0.9, "Batch norm decay parameter.")
    proj_head_mode: str = _flag(
        "nonlinear", "How the head projection is done.", PROJ_HEAD_MODES)
    proj_out_dim: int = _flag(128, "Number of head projection dimension.")
    num_proj_layers: int = _flag(3, "Number of non-linear head layers.")
    ft_proj_selector: int = _flag(
        0, "Which layer of the projection head to use during fine-tuning. "
        "0 means no projection head, and -1 means the final layer.")

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
    temperature: float = _flag(0.1, "Temperature parameter for contrastive loss.")
    hidden_norm: bool = _flag(
        True, "Whether to L2-normalize the hidden vectors (cosine similarity) in the "
        "contrastive loss.")

    def validate(self):
        _check_finite(self)
        _check_range("temperature", self.temperature, low=0.0, low_open=True)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer, weight decay and learning-rate schedule."""
    optimizer: str = _flag("lars", "Optimizer to use.", OPTIMIZERS)
    # Per 256 images (linear scaling) or per sqrt(batch) (sqrt scaling).
    learning_rate: float = _flag(0.3, "Initial learning rate per batch size of 256.")
    learning_rate_scaling: str = _flag(
        "linear", "How to scale the learning rate as a function of batch size.", LR_SCALINGS)
    warmup_epochs: float = _flag(10.0, "Number of epochs of warmup.")
    weight_decay: float = _flag(1e-6, "Amount of weight decay to use.")
    momentum: float = _flag(0.9, "Momentum parameter.")

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
    train_mode: str = _flag(
        "pretrain", "The train mode controls different objectives and trainable components.",
        TRAIN_MODES)
    mode: str = _flag("train", "Whether to perform training or evaluation.", MODES)
    model_dir: Optional[str] = _flag(
        None, "Model directory for training: checkpoints, TensorBoard summaries, "
        "config.json, result.json.")
    train_batch_size: int = _flag(512, "Global batch size for training.")
    train_epochs: int = _flag(100, "Number of epochs to train for.")
    train_steps: int = _flag(
        0, "Number of steps to train for. If provided, overrides train_epochs.")
    eval_batch_size: int = _flag(256, "Global batch size for eval.")
    eval_steps: int = _flag(
        0, "Number of steps to eval for. If not provided, evals over entire dataset.")
    lineareval_while_pretraining: bool = _flag(
        True, "Whether to finetune supervised head while pretraining.")
    checkpoint: Optional[str] = _flag(
        None, "Loading from the given checkpoint for fine-tuning if a finetuning "
        "checkpoint does not already exist in model_dir. A checkpoint prefix "
        "or a model_dir (its latest checkpoint).")
    teacher: Optional[str] = _flag(
        None, "[ext] For --train_mode=distill: the fine-tuned teacher, a model_dir or "
        "checkpoint prefix of ours (also an import of official weights) or a SavedModel "
        "with a logits_sup output (our hub modules, official TF2 SavedModels).")
    distill_temperature: float = _flag(
        1.0, "[ext] Temperature T of distillation: cross-entropy between softmax(teacher "
        "logits / T) and softmax(student logits / T) (SimCLRv2: 1.0 big to small, 0.1 "
        "self-distillation).")
    distill_supervised_weight: float = _flag(
        0.0, "[ext] Weight of the supervised loss on the labelled images (all, or the "
        "--label_fraction subset), added to the distillation loss; 0 leaves the labels "
        "unused.")
    finetune_from_scratch: bool = _flag(
        False, "[ext] Allow --train_mode=finetune without --checkpoint: "
        "train from random weights (supervised or random-encoder baselines).")
    zero_init_logits_layer: bool = _flag(
        False, "If True, zero initialize layers after avg_pool for supervised learning.")
    fine_tune_after_block: int = _flag(
        -1, "The layers after which block that we will fine-tune. -1 "
        "means fine-tuning everything. 0 means fine-tuning after stem "
        "block. 4 means fine-tuning just the linear head.")
    checkpoint_epochs: int = _flag(1, "Number of epochs between checkpoints/summaries.")
    checkpoint_steps: int = _flag(
        0, "Number of steps between checkpoints/summaries. If provided, "
        "overrides checkpoint_epochs.")
    keep_checkpoint_max: int = _flag(5, "Maximum number of checkpoints to keep.")
    keep_hub_module_max: int = _flag(
        1, "Maximum number of SavedModel (TF-Hub) exports to keep in "
        "model_dir/saved_model after evaluation; 0 exports none.")
    steps_per_loop: int = _flag(
        0, "[ext] Training steps per tf.function call (and per progress line); "
        "0 picks min(checkpoint_steps, 50).")
    linear_eval_epochs: int = _flag(
        0, "[ext] After pretraining, run the linear evaluation protocol "
        "(frozen encoder, BN in inference mode, a new linear head) for "
        "this many epochs in model_dir/linear_eval; 0 skips it.")
    linear_eval_learning_rate: float = _flag(
        0.1, "[ext] Learning rate per 256 images of that linear "
        "evaluation (momentum optimizer, no weight decay).")
    seed: int = _flag(0, "[ext] Seed for weights, data order and augmentation.")
    deterministic: bool = _flag(
        False, "[ext] Bitwise-reproducible training on CPU: two runs with the same flags "
        "and --seed give the same losses and weights. Turns on TensorFlow op determinism "
        "and turns off Grappler's graph rewrites (its memory optimizer sums large "
        "gradients in arrival order); as fast on the quickstart (bench/README.md). CPU only.")
    precision: str = _flag(
        "float32", "[ext] Keras dtype policy: float32, mixed_bfloat16 or mixed_float16. The "
        "contrastive loss is always computed in float32.", PRECISIONS)
    eval_name: Optional[str] = _flag(
        None, "Name for eval (accepted for compatibility; unused, as in the official TF2).")

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
        _check_range("distill_temperature", self.distill_temperature, low=0.0, low_open=True)
        _check_range("distill_supervised_weight", self.distill_supervised_weight, low=0.0)
        if self.train_mode == "distill":
            if not self.teacher:
                raise ConfigError("--train_mode=distill needs --teacher=<a fine-tuned model_dir, "
                                  "checkpoint or SavedModel with logits_sup>.")
            if self.finetune_from_scratch or self.linear_eval_epochs:
                raise ConfigError("--finetune_from_scratch and --linear_eval_epochs do not "
                                  "apply to --train_mode=distill (the student starts from "
                                  "random weights, or from --checkpoint).")
        elif self.teacher:
            raise ConfigError(f"--teacher={self.teacher} applies to --train_mode=distill; "
                              f"received --train_mode={self.train_mode}.")
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
        elif self.train_mode == "pretrain":
            if self.fine_tune_after_block != -1:
                raise ConfigError(
                    f"--fine_tune_after_block={self.fine_tune_after_block} applies to "
                    "--train_mode=finetune; expected -1 for pretraining.")
            if self.finetune_from_scratch:
                raise ConfigError("--finetune_from_scratch applies to --train_mode=finetune.")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """The linear probe and kNN on frozen features (`tf_simclr.probe`), and the kNN
    monitor during pretraining."""
    probe: str = _flag(
        "none", "[ext] After pretraining, probe the encoder on frozen features in "
        "model_dir/probe (L-BFGS logistic regression and kNN); 'baselines' also probes "
        "raw pixels and the random-weight encoder; results join result.json.",
        PROBE_MODES)
    probe_l2_min: float = _flag(1e-6, "[ext] Weakest L2 strength of the probe's grid.")
    probe_l2_max: float = _flag(1e5, "[ext] Strongest L2 strength of the probe's grid.")
    probe_l2_steps: int = _flag(
        23, "[ext] Log-spaced L2 values in the grid: 23 = two per decade; SimCLR appendix "
        "B.8 used 45 in 1e-6..1e5 (bench/README.md compares them).")
    probe_holdout_fraction: float = _flag(
        0.1, "[ext] Part of the train split held out to choose the L2 strength; the "
        "probe is then refitted on the whole train split.")
    probe_max_iterations: int = _flag(
        1000, "[ext] L-BFGS iterations per fit at most (it stops earlier on convergence).")
    probe_curvature_scale: float = _flag(
        0.25, "[ext] s of the probe's preconditioner, W = U diag((s lambda + l2)^-1/2) V "
        "over the eigenpairs of the train features' second moment (fewer L-BFGS "
        "iterations on correlated features, the same minimum); 0 turns it off.")
    probe_patience: int = _flag(
        2, "[ext] Stop walking the L2 grid (strongest first) after this many values in a "
        "row score below the best on the held-out part; 0 fits the whole grid.")
    knn_monitor_epochs: int = _flag(
        0, "[ext] During pretraining on labelled data, every this many epochs: kNN top-1 "
        "(k=200, T=0.1) of a subset of the eval split against a subset of the train "
        "split, as eval/knn_top1; 0 turns it off.")
    knn_monitor_train_examples: int = _flag(
        10000, "[ext] Train examples (the first ones) in the kNN monitor's bank.")
    knn_monitor_eval_examples: int = _flag(
        2000, "[ext] Eval examples (the first ones) the kNN monitor classifies.")

    def validate(self):
        _check_finite(self)
        _check_choice("probe", self.probe, PROBE_MODES)
        _check_range("probe_l2_min", self.probe_l2_min, low=0.0, low_open=True)
        _check_range("probe_l2_max", self.probe_l2_max, low=self.probe_l2_min)
        _check_range("probe_l2_steps", self.probe_l2_steps, low=1)
        _check_range("probe_holdout_fraction", self.probe_holdout_fraction, low=0.0,
                     high=0.5, low_open=True)
        _check_range("probe_max_iterations", self.probe_max_iterations, low=1)
        _check_range("probe_patience", self.probe_patience, low=0)
        _check_range("probe_curvature_scale", self.probe_curvature_scale, low=0.0)
        _check_range("knn_monitor_epochs", self.knn_monitor_epochs, low=0)
        _check_range("knn_monitor_train_examples", self.knn_monitor_train_examples, low=1)
        _check_range("knn_monitor_eval_examples", self.knn_monitor_eval_examples, low=1)


@dataclasses.dataclass(frozen=True)
class HardwareConfig:
    """Which tf.distribute strategy runs the job."""
    use_tpu: bool = _flag(
        False, "Whether to run on TPU (official default True; here False, see README).")
    tpu_name: Optional[str] = _flag(None, "The Cloud TPU to use for training.")
    tpu_zone: Optional[str] = _flag(None, "GCE zone where the Cloud TPU is located in.")
    gcp_project: Optional[str] = _flag(
        None, "Project name for the Cloud TPU-enabled project.")
    master: Optional[str] = _flag(
        None, "Address/name of the TensorFlow master to use. By default, use an in-process "
        "master.")
    cpu_replicas: int = _flag(
        0, "[ext] Split the CPU into this many logical devices and mirror over "
        "them (correctness runs without GPUs; the replicas share the cores).")

    def validate(self):
        _check_finite(self)
        _check_range("cpu_replicas", self.cpu_replicas, low=0)
        if self.use_tpu and self.cpu_replicas:
            raise ConfigError("--use_tpu contradicts --cpu_replicas; expected one of them.")
