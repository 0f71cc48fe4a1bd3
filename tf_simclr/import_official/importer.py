"""An official SimCLR checkpoint -> a tf_simclr model_dir, verified.

`import_official(options)` reads the source's names and shapes, detects the
architecture (or checks `--variant`), decides the classifier's input, builds our
model, assigns every variable exactly once (one tensor read at a time), checks
that nothing of the source is left but known extras, runs a SavedModel source
beside the import, and writes a model_dir: config.json, ckpt-<step> (the model
only) and import_report.json (mapped / skipped and why / freshly initialised /
BatchNorms whose statistics look untrained / the comparison of outputs).
"""

import dataclasses
import json
import os
import re
import shutil
from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from tf_simclr import config as config_lib
from tf_simclr.errors import CheckpointError, ConfigError, StorageError
from tf_simclr.import_official import architecture, mapping, names, sources
from tf_simclr.models import simclr

REPORT_FILENAME = "import_report.json"
CLASSIFIER_MATMUL = "head_supervised/linear_layer/dense/MatMul"
WEIGHTS = ("online", "ema")
# Relative tolerance of the comparison with a SavedModel source, of max |source|.
OUTPUT_RTOL = 1e-4
_VERIFY_SEED = 20201


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    """What to import and where; None means: decide from the source."""
    source: str
    model_dir: str
    variant: Optional[object] = None  # a hub_export.variants.Variant (the entry point parses it)
    weights: str = "online"
    ft_proj_selector: Optional[int] = None
    image_size: Optional[int] = None
    overwrite: bool = False


def _check_options(options):
    if options.weights not in WEIGHTS:
        raise ConfigError(f"--weights={options.weights} is not one of {WEIGHTS}.")
    if not options.model_dir:
        raise ConfigError("--model_dir is not set; expected the folder to write the "
                          "imported model_dir into.")
    if (os.path.exists(options.model_dir) and os.listdir(options.model_dir)
            and not options.overwrite):
        raise StorageError(f"--model_dir={options.model_dir} exists and is not empty; "
                           "expected a new folder, or --overwrite to replace it.")


def _check_variant(options, arch, source_path, classified):
    wanted = options.variant
    if wanted is None:
        return
    found = (arch.resnet_depth, arch.width_multiplier, arch.sk_ratio > 0)
    if (wanted.resnet_depth, wanted.width_multiplier, wanted.sk_ratio > 0) != found:
        stem = classified.shapes[classified.convs[0][1]]
        raise CheckpointError(f"--variant={wanted.name} but --source={source_path} is "
                              f"{arch.variant} (stem kernel {stem}).")


def _image_size(options, arch, source_path, classified):
    size = options.image_size or (32 if arch.cifar_stem else 224)
    if (size <= 32) != arch.cifar_stem:
        stem = classified.shapes[classified.convs[0][1]]
        has, other = (("the CIFAR stem", "<= 32") if arch.cifar_stem
                      else ("the ImageNet stem", "above 32"))
        raise ConfigError(
            f"--image_size={size} selects the {'CIFAR' if size <= 32 else 'ImageNet'} stem "
            f"but --source={source_path} has {has} {stem}; expected --image_size {other}.")
    return size


def _selector_from_op(op_name):
    """0 for the encoder's output, j + 1 for the output of projection layer nl_j."""
    relu = re.search(r"head_contrastive/Relu(?:_(\d+))?$", op_name)
    if relu:
        return int(relu.group(1) or 0) + 1
    if "final_avg_pool" in op_name or op_name.startswith("base_model/"):
        return 0
    return None


def classifier_input(source, arch, requested):
    """(ft_proj_selector or None = decide by running the source, train_mode, how)."""
    if not arch.num_classes:
        return 0, "pretrain", "no classifier in the source"
    path = source.path.lower()
    finetuned_path = re.search(r"finetune|supervised", path)
    if requested is not None:
        mode = "finetune" if finetuned_path else "pretrain"
        return requested, mode, "--ft_proj_selector"
    if source.meta_graph:
        found = sources.classifier_input_op(source.meta_graph, CLASSIFIER_MATMUL)
        if found is not None and _selector_from_op(found[0]) is not None:
            name, stopped = found
            return (_selector_from_op(name), "pretrain" if stopped else "finetune",
                    f"the .meta graph: {CLASSIFIER_MATMUL} reads {name}")
    if source.kind == "tf2_saved_model":
        return None, None, "running the source"
    if re.search(r"finetuned_(1|10)pct", path):
        logging.warning("classifier input of %s taken from its path (finetuned_1pct / "
                        "10pct: the first projection layer)", source.path)
        return 1, "finetune", "the path (finetuned_1pct / 10pct)"
    if re.search(r"finetuned_100pct|supervised", path):
        return 0, "finetune", "the path (finetuned_100pct / supervised)"
    if finetuned_path:
        raise CheckpointError(
            f"--source={source.path} is fine-tuned but its classifier input cannot be "
            "decided (no .meta graph); expected --ft_proj_selector: 1 for the released "
            "1%/10% models, 0 for 100% and supervised ones.")
    return 0, "pretrain", "the official default (pretraining, linear head on the encoder)"


def build_config(arch, image_size, selector, train_mode, model_dir):
    """The Config of the imported model."""
    base = config_lib.Config()
    layers = arch.num_proj_layers or base.model.num_proj_layers
    return base.replace(
        resnet_depth=arch.resnet_depth, width_multiplier=arch.width_multiplier,
        sk_ratio=arch.sk_ratio, image_size=image_size, proj_head_mode="nonlinear",
        num_proj_layers=layers, proj_out_dim=arch.proj_out_dim, ft_proj_selector=selector,
        train_mode=train_mode, global_bn=False,
        lineareval_while_pretraining=bool(arch.num_classes) and train_mode == "pretrain",
        # A fine-tuned import is ready to evaluate (tf_simclr.run --mode=eval).
        mode="eval" if train_mode == "finetune" else "train", checkpoint=None,
        model_dir=os.path.abspath(model_dir)).validate()


def assign(pairs, source):
    for pair in pairs:
        value = source.read(pair.source)
        pair.target.assign(tf.cast(value, pair.target.dtype))


def untrained_batch_norms(classified, source):
    """BatchNorms of the source whose statistics are still their initial values."""
    found = []
    for group in (*[names_ for _, names_ in classified.bns], *classified.head_bn.values()):
        mean, variance = group.get("moving_mean"), group.get("moving_variance")
        if mean and variance and not np.any(source.read(mean)) and np.all(
                source.read(variance) == 1):
            found.append(mean.rsplit("/", 1)[0])
    return found


def _compare(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    diff = float(np.max(np.abs(ours - theirs))) if theirs.size else 0.0
    return {"max_abs_diff": diff, "max_abs_source": scale,
            "ok": bool(diff <= OUTPUT_RTOL * max(scale, 1e-6))}


def verify_with_saved_model(source_path, model, image_size):
    """Runs the SavedModel source and `model` on one fixed batch; returns
    ({endpoint: comparison}, the projection hiddens' logits match: selector or None,
    whether the source has a projection output)."""
    size = 32 if image_size <= 32 else 64
    images = tf.random.stateless_uniform([2, size, size, 3], seed=[_VERIFY_SEED, 0])
    loaded = tf.saved_model.load(source_path)
    theirs = {k: v.numpy() for k, v in loaded(images, trainable=False).items()}
    outputs = model.encoder(images, training=False)
    hiddens = model.projection_head(outputs["final_avg_pool"], training=False)
    ours = {"final_avg_pool": outputs["final_avg_pool"],
            **{k: outputs[k] for k in ("block_group1", "block_group2", "block_group3",
                                         "block_group4")}}
    if "proj_head_output" in theirs:
        ours["proj_head_output"] = hiddens[-1]
    comparisons = {k: _compare(v, theirs[k]) for k, v in ours.items() if k in theirs}
    selector = None
    if model.supervised_head is not None and "logits_sup" in theirs:
        for index, hidden in enumerate(hiddens):
            if hidden.shape[-1] != model.supervised_head.dense.kernel.shape[0]:
                continue
            result = _compare(model.supervised_head(hidden), theirs["logits_sup"])
            if result["ok"] or index == 0:
                comparisons["logits_sup"] = {**result, "ft_proj_selector": index}
            if result["ok"]:
                selector = index
                break
    return comparisons, selector, "proj_head_output" in theirs


def _write_model_dir(options, config, model, report, step):
    final = os.path.abspath(options.model_dir)
    tmp = final.rstrip("/") + ".importing"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    config_lib.save(config, tmp)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), tmp,
                                         max_to_keep=1)
    manager.save(checkpoint_number=step)
    config_lib.write_atomically(os.path.join(tmp, REPORT_FILENAME),
                                json.dumps(report, indent=2, sort_keys=True))
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def import_official(options):
    """Imports `options.source` into `options.model_dir`; returns the report."""
    _check_options(options)
    source = sources.open_source(options.source)
    classified = names.classify(source.variables, source.keys, options.weights)
    if options.weights == "ema" and not classified.has_ema:
        raise CheckpointError(f"--weights=ema but --source={options.source} has no "
                              f"ema_model/ variables (scopes: {classified.scopes()}); "
                              "expected --weights=online.")
    if not (classified.convs or classified.head_dense or classified.supervised):
        raise CheckpointError(
            f"--source={options.source} has no SimCLR scopes (base_model/, ema_model/, "
            f"resnet/, head_contrastive/, projection_head/, head_supervised/; found: "
            f"{classified.scopes()}); expected an official SimCLR checkpoint.")
    if classified.unknown:
        shown = ", ".join(classified.unknown[:5])
        raise CheckpointError(
            f"{len(classified.unknown)} variable(s) of --source={options.source} are neither "
            f"SimCLR model variables nor known extras (global_step, */Momentum, ema_model/*, "
            f"memory*): {shown}{' ...' if len(classified.unknown) > 5 else ''}.")
    arch = architecture.detect(classified, options.source)
    _check_variant(options, arch, options.source, classified)
    image_size = _image_size(options, arch, options.source, classified)
    selector, train_mode, decided_by = classifier_input(source, arch, options.ft_proj_selector)

    def build(chosen, mode):
        config = build_config(arch, image_size, chosen, mode, options.model_dir)
        model = simclr.build_model(config, arch.num_classes)
        pairs = mapping.plan(classified, model)
        mapping.check_once(pairs)
        assign(pairs, source)
        return config, model, pairs

    config, model, pairs = build(selector or 0, train_mode or "pretrain")
    comparisons = {}
    if source.kind == "tf2_saved_model":
        comparisons, matched, has_projection = verify_with_saved_model(
            source.path, model, image_size)
        if selector is None and arch.num_classes:
            if matched is None:
                raise CheckpointError(
                    f"the classifier of --source={options.source} matches no input of its "
                    f"projection head (logits_sup: {comparisons.get('logits_sup')}); expected "
                    "an official SimCLR SavedModel.")
            # Pretraining's linear head reads the encoder (selector 0), and released
            # fine-tuned modules may lack the projection output (official #181).
            finetuned = (matched > 0 or not has_projection
                         or re.search(r"finetune|supervised", source.path.lower()))
            selector, train_mode = matched, "finetune" if finetuned else "pretrain"
            if (selector, train_mode) != (0, "pretrain"):
                config, model, pairs = build(selector, train_mode)
        bad = {k: v for k, v in comparisons.items() if not v["ok"]}
        if bad:
            name, worst = next(iter(bad.items()))
            raise CheckpointError(
                f"the import of --source={options.source} computes other outputs than the "
                f"source: {name} differs by {worst['max_abs_diff']:.3g} (source max "
                f"{worst['max_abs_source']:.3g}); expected <= {OUTPUT_RTOL} of it.")
    fresh = mapping.unassigned(model, pairs)
    head = {id(v) for v in model.projection_head.variables}
    unexpected = [v.path for v in fresh if id(v) not in head or classified.head_dense]
    if unexpected:
        raise CheckpointError(f"no source variable for {unexpected[:3]}; expected the "
                              "source to hold every encoder variable.")
    report = {
        "source": options.source, "source_kind": source.kind, "source_step": source.step,
        "variant": arch.variant, "architecture": dataclasses.asdict(arch),
        "weights": options.weights, "image_size": image_size,
        "ft_proj_selector": config.model.ft_proj_selector, "train_mode": train_mode,
        "classifier_input_decided_by": decided_by,
        "mapped": [[p.source, p.target.path, list(p.target.shape)] for p in pairs],
        "skipped": {reason: sorted(found) for reason, found in classified.skipped.items()},
        "freshly_initialised": [v.path for v in fresh],
        "untrained_batch_norms": untrained_batch_norms(classified, source),
        "compared_with_source": comparisons,
    }
    if source.kind == "tf2_saved_model" and source.slots:
        report["skipped"]["optimizer state"] = sorted(source.slots)
    report["notes"] = _notes(report)
    for note in report["notes"]:
        logging.warning("%s", note)
    report["model_dir"] = _write_model_dir(options, config, model, report, source.step or 0)
    logging.info("imported %s (%s, %s) into %s: %d variables mapped, %d skipped, %d freshly "
                 "initialised", options.source, source.kind, arch.variant, report["model_dir"],
                 len(pairs), sum(len(v) for v in report["skipped"].values()), len(fresh))
    return report


def _notes(report):
    notes = []
    if report["freshly_initialised"]:
        notes.append(f"{len(report['freshly_initialised'])} variables have no source and are "
                     "freshly initialised (the source has no projection head: v1 releases "
                     "and supervised models)")
    if report["untrained_batch_norms"]:
        notes.append(f"{len(report['untrained_batch_norms'])} BatchNorm(s) have untrained "
                     f"statistics (moving mean 0, variance 1), e.g. "
                     f"{report['untrained_batch_norms'][0]}")
    return notes
