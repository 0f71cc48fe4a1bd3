"""A whole run as `tf_simclr.run` starts it: train, evaluate, probe, export.

`run(config, after_eval=...)` follows the official modes: `train` trains to
train_steps; `train_then_eval` then evaluates the supervised head once (and, with
`--probe`, probes the encoder on frozen features in model_dir/probe and draws
model_dir/neighbours.png) and runs the `after_eval` actions (the entry point passes
hub_export's SavedModel export); `eval` does that for every new checkpoint in
model_dir until the final one. With `--linear_eval_epochs` a pretraining run
continues with the SGD linear evaluation protocol in model_dir/linear_eval (frozen
encoder, new linear head, the official ImageNet-scale protocol). The quickstart
goes from pretraining to the probe and its baselines to an export in one command.
Results land in model_dir/result.json.
"""

import json
import os
import time

import keras
import tensorflow as tf
from absl import logging

from tf_simclr import config as config_lib
from tf_simclr import data, input_pipeline
from tf_simclr.probe import encoders as probe_encoders
from tf_simclr.probe import protocol
from tf_simclr.train import checkpointing, determinism, evaluator, progress, trainer
from tf_simclr.train import strategy as strategy_lib

RESULT_FILENAME = "result.json"
PROBE_DIRNAME = "probe"
NEIGHBOURS_FILENAME = "neighbours.png"
EVAL_WAIT_SECONDS = 3600


def _write_json(path, payload):
    config_lib.write_atomically(path, json.dumps(payload, indent=2, sort_keys=True))


def _probe(config, state, source):
    """{encoder: probe row} of the trained encoder (and the baselines when asked)."""
    model_dir = config.train.model_dir
    chosen = [probe_encoders.from_model(state.model, f"model_dir {model_dir} step {state.step}")]
    if config.probe.probe == "baselines":
        chosen += probe_encoders.baselines(config)
    result = protocol.probe(chosen, state.strategy, source, config,
                            os.path.join(model_dir, PROBE_DIRNAME),
                            neighbours_png=os.path.join(model_dir, NEIGHBOURS_FILENAME))
    return result["rows"]


def _evaluate_then_act(config, state, source, chief, after_eval):
    """Evaluates (the supervised head, and the probe when configured), then (on the
    chief) runs each action and merges what it returns."""
    result = {"global_step": state.step}
    summaries = progress.Summaries(config.train.model_dir, enabled=chief)
    if _can_evaluate(config, source):
        result.update(evaluator.evaluate(state, source))
        summaries.scalars(result["global_step"],
                          {k: v for k, v in result.items() if k != "global_step"},
                          prefix="eval/")
    if chief and _probes(config):
        result["probe"] = _probe(config, state, source)
        main = next(iter(result["probe"].values()))
        summaries.scalars(state.step, {"probe_linear_top1": main["linear_top1"],
                                       "probe_knn_top1": main["knn_top1"]}, prefix="eval/")
    if chief:
        for action in after_eval:
            result.update(action(config, state.model, state.step))
        _write_json(os.path.join(config.train.model_dir,
                                 f"result_{result['global_step']}.json"), result)
    return result


def _probes(config):
    return config.train.train_mode == "pretrain" and config.probe.probe != "none"


def _can_evaluate(config, source):
    has_head = config.trains_classifier or config.train.lineareval_while_pretraining
    if not has_head or source.info.num_classes == 0:
        logging.info("no supervised head (unlabeled data or --lineareval_while_pretraining="
                     "false): evaluation of the head skipped")
        return False
    if source.info.num_eval_examples == 0:
        logging.info("eval split %r is empty: evaluation skipped", config.data.eval_split)
        return False
    return True


def _evaluate_checkpoints(config, state, source, chief, after_eval):
    """`--mode=eval`: every new checkpoint in model_dir until the last train step."""
    total = config_lib.train_steps(config, source.info.num_train_examples)
    result = {}
    for path in tf.train.checkpoints_iterator(config.train.model_dir, min_interval_secs=15,
                                              timeout=EVAL_WAIT_SECONDS):
        checkpointing.restore(path, f"variable of the model of {config.train.model_dir}",
                              model=state.model, optimizer=state.optimizer)
        result = _evaluate_then_act(config, state, source, chief, after_eval)
        if state.step >= total:
            break
    if not result:
        raise config_lib.ConfigError(
            f"no checkpoint appeared in --model_dir={config.train.model_dir} within "
            f"{EVAL_WAIT_SECONDS} s; expected a model_dir that a training run writes to.")
    return result


def run(config, strategy=None, after_eval=()):
    """Runs the stages `config` asks for; returns {stage: metrics} (also in result.json).

    `strategy`: reuse this one (a process must not create a second MirroredStrategy
    with the same devices: their collective ops would clash); default from config.
    `after_eval`: callables `action(config, model, step) -> dict` run on the chief
    after each evaluation (also of the linear eval); their dicts join the eval result.
    """
    config.validate()
    started = time.time()
    # The initial weights follow --seed (data order and views do by construction).
    keras.utils.set_random_seed(config.train.seed)
    if strategy is None:
        strategy = strategy_lib.make_strategy(config.hardware)
    if config.train.deterministic:
        determinism.enable(strategy)
    strategy_lib.check_batch_divides(config.train.train_batch_size, strategy, "train_batch_size")
    strategy_lib.check_batch_divides(config.train.eval_batch_size, strategy, "eval_batch_size")
    # Distillation reads every train image; label_fraction then only hides labels.
    source = data.build_source(config.data, seed=config.train.seed,
                               hide_labels=config.train.train_mode == "distill")
    info = source.info
    input_pipeline.check_image_size(config, info)
    if _probes(config):
        protocol.check_labelled(source, config)
    model_dir = config.train.model_dir
    chief = strategy_lib.is_chief(strategy)
    logging.info("%s on %s: %d train / %d eval examples, %d classes, %d replica(s)",
                 config.train.train_mode, info.name, info.num_train_examples,
                 info.num_eval_examples, info.num_classes, strategy.num_replicas_in_sync)

    state = trainer.TrainState(config, strategy, info.num_classes, info.num_train_examples)
    if chief:
        checkpointing.check_model_dir_writable(
            model_dir, needed_bytes=(config.train.keep_checkpoint_max + 1)
            * checkpointing.checkpoint_bytes(state.model))
        config_lib.save(config, model_dir)

    results = {"config": config.flat()}
    if config.train.mode in ("train", "train_then_eval"):
        train_started = time.time()
        results["train"] = trainer.Trainer(state, source).run()
        results["train_seconds"] = time.time() - train_started
    if config.train.mode in ("eval", "train_then_eval") and (
            _probes(config) or _can_evaluate(config, source)):
        if config.train.mode == "eval":
            results["eval"] = _evaluate_checkpoints(config, state, source, chief, after_eval)
        else:
            results["eval"] = _evaluate_then_act(config, state, source, chief, after_eval)
    results["global_step"] = state.step
    results["seconds"] = time.time() - started
    if chief:
        _write_json(os.path.join(model_dir, RESULT_FILENAME), results)

    if config.train.train_mode == "pretrain" and config.train.linear_eval_epochs:
        results["linear_eval"] = run(config_lib.linear_eval_config(config), strategy,
                                     after_eval)
        if chief:
            _write_json(os.path.join(model_dir, RESULT_FILENAME), results)
    return results
