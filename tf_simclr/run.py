r"""Entry point: `python -m tf_simclr.run --train_mode=pretrain|finetune ...`.

Flag names, meanings and defaults follow the official google-research/simclr
`tf2/run.py`, so its command lines run here; README.md lists the few defaults that
differ and the flags we added. This is one of the two modules that read absl
FLAGS: it turns them into a validated, frozen `Config` and hands that to
`tf_simclr.job.run`.

Exit status: 0 on success, 2 for bad flags or data (the message names the bad
value), 3 when training diverges (NaN/Inf loss; the last good checkpoint is kept),
143 after SIGTERM (a checkpoint was saved first).
"""

import dataclasses
import sys

from absl import app, flags, logging

from tf_simclr import config as config_lib
from tf_simclr import errors

_HELP = {
    # data
    "dataset": "Name of a TFDS image-classification dataset (e.g. cifar10, imagenet2012, "
               "stl10, fashion_mnist), or image_folder to read --data_dir as a folder of "
               "images (labelled by sub-folder, or a flat unlabeled folder).",
    "data_dir": "TFDS data directory, or the folder of images for --dataset=image_folder.",
    "train_split": "Split for training, in TFDS split syntax (e.g. train, train[:10%]).",
    "eval_split": "Split for evaluation.",
    "cache_dataset": "Whether to cache the decoded dataset in memory.",
    "image_size": "Input image size. 32 and below select the CIFAR stem (3x3 stride-1 "
                  "conv, no max-pool) and no crop at eval.",
    "label_fraction": "[ext] Train on a stratified fraction of the labelled train split "
                      "(same fraction of every class, chosen by --seed), for 1%/10% "
                      "semi-supervised fine-tuning.",
    "bad_images": "[ext] image_folder files that cannot be decoded: error (refuse to "
                  "start, listing them) or skip (leave them out and report the count).",
    # augmentation
    "color_jitter_strength": "The strength s of color jittering (brightness, contrast and "
                             "saturation 0.8s, hue 0.2s).",
    "use_blur": "Whether or not to use Gaussian blur for augmentation during pretraining.",
    "color_jitter_impl": "[ext] simclrv2: multiplicative brightness (official default); "
                         "simclrv1: additive brightness.",
    "crop_sampler": "[ext] official: TF's sample_distorted_bounding_box as the official "
                    "code (uniform aspect, uniform height, area >= 0.1); paper: area "
                    "uniform in (0.08, 1), log-uniform aspect.",
    "augment_on": "[ext] Where to run the augmentation: host (tf.data) or device (inside "
                  "the train step; vectorized with static shapes on TPUs and GPUs).",
    # model
    "resnet_depth": "Depth of ResNet.",
    "width_multiplier": "Multiplier to change width of network (fractional widths allowed).",
    "sk_ratio": "If it is bigger than 0, it will enable SK. Recommendation: 0.0625.",
    "se_ratio": "If it is bigger than 0, it will enable SE.",
    "global_bn": "Whether to aggregate BN statistics across distributed cores.",
    "batch_norm_decay": "Batch norm decay parameter.",
    "proj_head_mode": "How the head projection is done.",
    "proj_out_dim": "Number of head projection dimension.",
    "num_proj_layers": "Number of non-linear head layers.",
    "ft_proj_selector": "Which layer of the projection head to use during fine-tuning. "
                        "0 means no projection head, and -1 means the final layer.",
    # loss
    "temperature": "Temperature parameter for contrastive loss.",
    "hidden_norm": "Whether to L2-normalize the hidden vectors (cosine similarity) in the "
                   "contrastive loss.",
    # optimizer
    "optimizer": "Optimizer to use.",
    "learning_rate": "Initial learning rate per batch size of 256.",
    "learning_rate_scaling": "How to scale the learning rate as a function of batch size.",
    "warmup_epochs": "Number of epochs of warmup.",
    "weight_decay": "Amount of weight decay to use.",
    "momentum": "Momentum parameter.",
    # train
    "train_mode": "The train mode controls different objectives and trainable components.",
    "mode": "Whether to perform training or evaluation.",
    "model_dir": "Model directory for training: checkpoints, TensorBoard summaries, "
                 "config.json, result.json.",
    "train_batch_size": "Global batch size for training.",
    "train_epochs": "Number of epochs to train for.",
    "train_steps": "Number of steps to train for. If provided, overrides train_epochs.",
    "eval_batch_size": "Global batch size for eval.",
    "eval_steps": "Number of steps to eval for. If not provided, evals over entire dataset.",
    "lineareval_while_pretraining": "Whether to finetune supervised head while pretraining.",
    "checkpoint": "Loading from the given checkpoint for fine-tuning if a finetuning "
                  "checkpoint does not already exist in model_dir. A checkpoint prefix "
                  "or a model_dir (its latest checkpoint).",
    "finetune_from_scratch": "[ext] Allow --train_mode=finetune without --checkpoint: "
                             "train from random weights (supervised or random-encoder "
                             "baselines).",
    "zero_init_logits_layer": "If True, zero initialize layers after avg_pool for "
                              "supervised learning.",
    "fine_tune_after_block": "The layers after which block that we will fine-tune. -1 "
                             "means fine-tuning everything. 0 means fine-tuning after stem "
                             "block. 4 means fine-tuning just the linear head.",
    "checkpoint_epochs": "Number of epochs between checkpoints/summaries.",
    "checkpoint_steps": "Number of steps between checkpoints/summaries. If provided, "
                        "overrides checkpoint_epochs.",
    "keep_checkpoint_max": "Maximum number of checkpoints to keep.",
    "keep_hub_module_max": "Maximum number of SavedModel (TF-Hub) exports to keep in "
                           "model_dir/saved_model after evaluation; 0 exports none.",
    "steps_per_loop": "[ext] Training steps per tf.function call (and per progress line); "
                      "0 picks min(checkpoint_steps, 50).",
    "linear_eval_epochs": "[ext] After pretraining, run the linear evaluation protocol "
                          "(frozen encoder, BN in inference mode, a new linear head) for "
                          "this many epochs in model_dir/linear_eval; 0 skips it.",
    "linear_eval_learning_rate": "[ext] Learning rate per 256 images of that linear "
                                 "evaluation (momentum optimizer, no weight decay).",
    "seed": "[ext] Seed for weights, data order and augmentation.",
    "precision": "[ext] Keras dtype policy: float32, mixed_bfloat16 or mixed_float16. The "
                 "contrastive loss is always computed in float32.",
    "eval_name": "Name for eval (accepted for compatibility; unused, as in the official TF2).",
    # hardware
    "use_tpu": "Whether to run on TPU (official default True; here False, see README).",
    "tpu_name": "The Cloud TPU to use for training.",
    "tpu_zone": "GCE zone where the Cloud TPU is located in.",
    "gcp_project": "Project name for the Cloud TPU-enabled project.",
    "master": "Address/name of the TensorFlow master to use. By default, use an in-process "
              "master.",
    "cpu_replicas": "[ext] Split the CPU into this many logical devices and mirror over "
                    "them (correctness runs without GPUs; the replicas share the cores).",
}

_CHOICES = {
    "train_mode": config_lib.TRAIN_MODES,
    "mode": config_lib.MODES,
    "proj_head_mode": config_lib.PROJ_HEAD_MODES,
    "optimizer": config_lib.OPTIMIZERS,
    "learning_rate_scaling": config_lib.LR_SCALINGS,
    "augment_on": config_lib.AUGMENT_ON,
    "crop_sampler": config_lib.CROP_SAMPLERS,
    "color_jitter_impl": config_lib.COLOR_JITTER_IMPLS,
    "bad_images": config_lib.BAD_IMAGE_POLICIES,
    "precision": config_lib.PRECISIONS,
}


def define_flags(flag_values=flags.FLAGS):
    """Defines one flag per Config field, with the field's default."""
    defaults = config_lib.Config().flat()
    types = {f.name: f.type for group in dataclasses.fields(config_lib.Config)
             for f in dataclasses.fields(group.type)}
    for name in config_lib.field_names():
        default, kind, help_text = defaults[name], types[name], _HELP[name]
        if name in _CHOICES:
            flags.DEFINE_enum(name, default, _CHOICES[name], help_text, flag_values=flag_values)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def config_from_flags(flag_values=flags.FLAGS):
    """The frozen Config that the parsed flags describe (not yet validated)."""
    return config_lib.Config.from_flat(
        {name: flag_values[name].value for name in config_lib.field_names()})


define_flags()
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only --flags.")
    # These import TensorFlow; after flag parsing keeps --help fast.
    from hub_export.actions import ExportAfterEval
    from tf_simclr import job
    config = config_from_flags()
    try:
        config.validate()
        job.run(config, after_eval=[ExportAfterEval()])
    except (errors.UsageError, errors.TrainingDiverged, errors.Terminated) as e:
        if isinstance(e, errors.Terminated):
            logging.warning("%s", e)
        else:
            logging.error("%s", e)
            print(f"error: {e}", file=sys.stderr)
        sys.exit(errors.exit_status(e))


def entry_point():
    app.run(main)


if __name__ == "__main__":
    entry_point()
