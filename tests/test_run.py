"""The command line: official flag names, flagfiles, bad input, and faults.

Messages are checked in-process through `job.run` (it raises the errors that
`run.main` turns into exit status 2); exit statuses, SIGTERM and SIGKILL are
checked on real `python -m tf_simclr.run` processes over a generated image folder.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import testutil
from hub_export.actions import ExportAfterEval
from tf_simclr import config as config_lib
from tf_simclr import data, errors, job, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(name for name in os.listdir(os.path.join(REPO, "flags"))
                   if name.endswith(".cfg"))

# Official tf2/run.py flag names a user's command line may carry.
OFFICIAL_FLAGS = (
    "train_mode", "mode", "dataset", "data_dir", "model_dir", "train_batch_size",
    "train_epochs", "train_steps", "eval_batch_size", "eval_steps", "image_size",
    "resnet_depth", "width_multiplier", "sk_ratio", "se_ratio", "proj_head_mode",
    "proj_out_dim", "num_proj_layers", "ft_proj_selector", "temperature", "hidden_norm",
    "global_bn", "batch_norm_decay", "optimizer", "learning_rate", "learning_rate_scaling",
    "warmup_epochs", "weight_decay", "momentum", "color_jitter_strength", "use_blur",
    "lineareval_while_pretraining", "zero_init_logits_layer", "fine_tune_after_block",
    "checkpoint", "checkpoint_epochs", "checkpoint_steps", "keep_checkpoint_max",
    "keep_hub_module_max", "train_split", "eval_split", "cache_dataset", "use_tpu",
    "tpu_name", "tpu_zone", "gcp_project", "master", "eval_name")


def _parse(argv):
    """A Config from command-line arguments, through the real flag definitions."""
    values = flags.FlagValues()
    run.define_flags(values)
    values(["tf_simclr.run", *argv])
    return run.config_from_flags(values)


def _image_folder(root):
    return testutil.two_class_image_folder(root, per_class=32, size=16, names=("cat", "dog"))


TINY_FLAGS = ("--dataset=image_folder", "--train_split=train[:75%]",
              "--eval_split=train[75%:]", "--image_size=16", "--resnet_depth=18",
              "--width_multiplier=0.0625", "--train_batch_size=8", "--eval_batch_size=8",
              "--optimizer=lars", "--learning_rate=0.5", "--warmup_epochs=0",
              "--temperature=0.5", "--use_blur=false", "--color_jitter_strength=0.5",
              "--num_proj_layers=2", "--proj_out_dim=16", "--keep_hub_module_max=0")


def test_help_lists_the_official_flag_names():
    out = subprocess.run([sys.executable, "-m", "tf_simclr.run", "--helpfull"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "Entry point" in out.stdout, out.stderr  # absl exits 1 after help
    for name in OFFICIAL_FLAGS:
        assert re.search(rf"--(\[no\])?{name}:", out.stdout), name


def test_official_command_line_parses_to_the_official_meaning():
    config = _parse(["--train_mode=pretrain", "--train_batch_size=512", "--train_epochs=100",
                     "--learning_rate=1.0", "--weight_decay=1e-4", "--temperature=0.5",
                     "--dataset=cifar10", "--image_size=32", "--eval_split=test",
                     "--resnet_depth=18", "--use_blur=False", "--color_jitter_strength=0.5",
                     "--model_dir=/tmp/simclr_test", "--use_tpu=False"]).validate()
    assert config.train.train_batch_size == 512 and config.optim.weight_decay == 1e-4
    assert config.cifar_stem and not config.augment.use_blur
    assert config_lib.scaled_learning_rate(config) == pytest.approx(2.0)  # 1.0 * 512 / 256


def test_distill_student_defaults_to_the_teacher_architecture(tmp_path):
    teacher = config_lib.Config().replace(resnet_depth=18, width_multiplier=0.25,
                                          sk_ratio=0.0625, model_dir=str(tmp_path))
    config_lib.save(teacher, str(tmp_path))
    base = ["--train_mode=distill", f"--teacher={tmp_path}", "--model_dir=/tmp/x"]
    same = _parse(base).validate().model
    assert (same.resnet_depth, same.width_multiplier, same.sk_ratio) == (18, 0.25, 0.0625)
    narrower = _parse([*base, "--width_multiplier=0.125"]).validate().model
    assert (narrower.resnet_depth, narrower.width_multiplier) == (18, 0.125)
    # Other modes, and teachers without config.json, keep the flags' defaults.
    assert _parse(["--train_mode=pretrain", "--model_dir=/tmp/x"]).model.resnet_depth == 50
    (tmp_path / "saved_model").mkdir()
    saved_model = _parse(["--train_mode=distill", f"--teacher={tmp_path / 'saved_model'}",
                          "--model_dir=/tmp/x"]).model
    assert saved_model.resnet_depth == 50


@pytest.mark.parametrize("flagfile", FLAGFILES)
def test_every_shipped_flagfile_gives_a_valid_config(flagfile, monkeypatch):
    monkeypatch.chdir(REPO)  # nested flagfiles name each other relative to the repo
    needs_checkpoint = "linear_eval" in flagfile or "finetune" in flagfile
    extra = ["--checkpoint=/tmp/pretrain"] if needs_checkpoint else []
    if "distill" in flagfile:
        extra = ["--teacher=/tmp/finetuned"]
    config = _parse([f"--flagfile=flags/{flagfile}", "--model_dir=/tmp/x", *extra]).validate()
    if "linear_eval" in flagfile:
        assert config.train.train_mode == "finetune"
        assert config.train.fine_tune_after_block == 4
    if "distill" in flagfile:
        assert config.train.train_mode == "distill" and config.data.image_size == 28
    if "finetune" in flagfile:  # SimCLR's fine-tuning recipe: every layer, no weight decay
        assert config.train.train_mode == "finetune"
        assert config.train.fine_tune_after_block == -1 and config.optim.weight_decay == 0
    if flagfile.startswith("cifar10"):
        assert config.data.dataset == "cifar10" and config.cifar_stem
    if flagfile.startswith("cifar10_pretrain"):
        assert config.loss.temperature == 0.5
        assert not config.augment.use_blur and config.augment.color_jitter_strength == 0.5
    if flagfile.startswith("imagenet_r50"):
        width = {"1x": 1.0, "2x": 2.0, "4x": 4.0}[flagfile.split("_")[-1][:2]]
        assert config.model.resnet_depth == 50 and config.model.width_multiplier == width
        assert config.train.train_batch_size == 4096 and config.augment.use_blur
    if flagfile in ("quickstart.cfg", "smoke.cfg", "fashion_mnist_1h.cfg"):
        assert config.data.dataset == "fashion_mnist"
    if flagfile == "fashion_mnist_1h.cfg":
        # The quickstart's recipe on a network four times as wide, longer.
        quickstart = _parse(["--flagfile=flags/quickstart.cfg", "--model_dir=/tmp/x"])
        assert config.model.width_multiplier == 4 * quickstart.model.width_multiplier
        # The label-efficiency tables' pretraining: the preset at the fine-tuning
        # flagfile's width (README's stage 1) must give that flagfile's architecture.
        finetune = _parse(["--flagfile=flags/fashion_mnist_finetune.cfg", "--model_dir=/tmp/x",
                           "--checkpoint=/tmp/pretrain"])
        narrow = _parse(["--flagfile=flags/fashion_mnist_1h.cfg", "--model_dir=/tmp/x",
                         "--width_multiplier=0.25"])
        assert narrow.model == finetune.model
        assert config.train.train_epochs > quickstart.train.train_epochs
        assert config.augment == quickstart.augment and config.loss == quickstart.loss


LINEAR_EVAL_FLAGFILES = [name for name in FLAGFILES if name.endswith("_linear_eval.cfg")]
# Fields that a linear-eval flagfile sets differently from the recipe
# (config_lib.linear_eval_overrides, what --linear_eval_epochs runs), and why.
LINEAR_EVAL_FLAGFILE_DIFFERENCES = {
    # Length: the recipe runs --linear_eval_epochs and checkpoints once, at the end; the
    # flagfiles run the official 100 (CIFAR-10) or 90 (ImageNet) epochs and keep the
    # default checkpoint every epoch.
    "train_epochs", "checkpoint_epochs",
}
LINEAR_EVAL_FLAGFILE_EXTRA_DIFFERENCES = {
    # Its comment gives the ImageNet recipe with weight decay 1e-6; the recipe (and
    # cifar10_linear_eval.cfg, "no weight decay") uses none.
    "imagenet_linear_eval.cfg": {"weight_decay"},
}


@pytest.mark.parametrize("flagfile", LINEAR_EVAL_FLAGFILES)
def test_linear_eval_flagfiles_agree_with_the_recipe(flagfile, monkeypatch):
    assert LINEAR_EVAL_FLAGFILES == ["cifar10_linear_eval.cfg", "imagenet_linear_eval.cfg"]
    monkeypatch.chdir(REPO)
    # The paths as the flagfiles' usage lines pass them for a pretraining run in /tmp/pre.
    pretrain = config_lib.Config().replace(model_dir="/tmp/pre")
    recipe = config_lib.linear_eval_overrides(pretrain)
    from_file = _parse([f"--flagfile=flags/{flagfile}", "--checkpoint=/tmp/pre",
                        "--model_dir=/tmp/pre/linear_eval"]).validate().flat()
    differences = (LINEAR_EVAL_FLAGFILE_DIFFERENCES
                   | LINEAR_EVAL_FLAGFILE_EXTRA_DIFFERENCES.get(flagfile, set()))
    assert differences <= set(recipe)  # no exemption outlives the field it exempts
    mismatched = {name: {"recipe": value, flagfile: from_file[name]}
                  for name, value in recipe.items()
                  if name not in differences and from_file[name] != value}
    assert not mismatched
    assert config_lib.linear_eval_config(pretrain).flat() == {**pretrain.flat(), **recipe}

def _bad_config(tmp_path, **fields):
    return config_lib.Config().replace(**{
        **{"model_dir": str(tmp_path / "run"), "image_size": 16, "resnet_depth": 18,
           "width_multiplier": 0.0625, "train_batch_size": 8, "train_steps": 1,
           "dataset": "image_folder", "data_dir": str(tmp_path / "images"),
           "train_split": "train", "eval_split": ""},
        **fields})


@pytest.mark.parametrize("fields, error, message", [
    ({"dataset": "no_such_dataset", "data_dir": None}, data.DataError,
     r"no_such_dataset"),
    ({"data_dir": "/nonexistent/images"}, data.DataError, r"/nonexistent/images"),
    ({"train_mode": "finetune"}, config_lib.ConfigError,
     r"--train_mode=finetune needs --checkpoint"),
    ({"image_size": 8}, config_lib.ConfigError, r"--image_size=8 is out of range"),
    ({"cpu_replicas": 3}, config_lib.ConfigError,
     r"--train_batch_size=8 does not divide evenly over 3 replicas"),
    ({"image_size": 28}, config_lib.ConfigError,
     r"--image_size=28 but image_folder images are 16x16"),
])
def test_bad_input_is_refused_with_a_message_naming_it(tmp_path, fields, error, message):
    _image_folder(tmp_path / "images")
    with pytest.raises(error, match=message):
        job.run(_bad_config(tmp_path, **fields))


def test_empty_image_folder_is_refused(tmp_path):
    os.makedirs(tmp_path / "images")
    with pytest.raises(data.DataError, match=r"images"):
        job.run(_bad_config(tmp_path))


def test_unwritable_model_dir_fails_before_training(tmp_path):
    _image_folder(tmp_path / "images")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(errors.StorageError, match=r"a_file/run is not writable"):
        job.run(_bad_config(tmp_path, model_dir=str(blocker / "run")))


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
    _image_folder(tmp_path / "images")
    from tf_simclr.train import checkpointing
    usage = checkpointing.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpointing.shutil, "disk_usage",
                        lambda path: usage._replace(free=1024))
    with pytest.raises(errors.StorageError,
                       match=r"run has 0.0 MiB free; this run needs about [\d.]+ MiB"):
        job.run(_bad_config(tmp_path))
    assert not (tmp_path / "run" / "config.json").exists()


def _command(model_dir, data_dir, *extra):
    return [sys.executable, "-m", "tf_simclr.run", *TINY_FLAGS, f"--data_dir={data_dir}",
            f"--model_dir={model_dir}", *extra]


def test_exit_status_and_message_for_bad_flags(tmp_path):
    bad = subprocess.run(_command(tmp_path / "run", tmp_path / "missing", "--train_steps=1"),
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2
    missing = tmp_path / "missing"
    assert f"error: --dataset=image_folder --data_dir '{missing}' does not exist" in bad.stderr
    enum = subprocess.run(_command(tmp_path / "run", tmp_path, "--optimizer=sgdd"),
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert enum.returncode != 0 and "--optimizer" in enum.stderr and "sgdd" in enum.stderr
    nan = subprocess.run(_command(tmp_path / "run", tmp_path, "--learning_rate=nan"),
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert nan.returncode == 2
    assert nan.stderr.strip().splitlines()[-1] == (
        "error: --learning_rate=nan is not a finite number; expected a finite value.")


def _checkpoint_steps(model_dir):
    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None:
        return []
    return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


def _assert_checkpoints_readable(model_dir):
    state = tf.train.get_checkpoint_state(str(model_dir))
    for path in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        assert reader.get_variable_to_shape_map(), path


def _start(model_dir, data_dir, total_steps):
    log = open(model_dir.parent / f"{model_dir.name}_{time.time()}.log", "w")
    process = subprocess.Popen(
        _command(model_dir, data_dir, f"--train_steps={total_steps}", "--checkpoint_steps=4",
                 "--steps_per_loop=1"),
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return process, log


def _wait_for_checkpoint(process, model_dir, at_least, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if max(_checkpoint_steps(model_dir), default=0) >= at_least:
            return
        assert process.poll() is None, "training ended before the checkpoint"
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint >= {at_least} within {timeout} s")


def test_sigterm_and_sigkill_lose_nothing_saved_and_resume_to_the_last_step(tmp_path):
    data_dir = _image_folder(tmp_path / "images")
    model_dir, total = tmp_path / "run", 64  # the kill below must land before the end

    # SIGTERM: the run saves the step it reached, says so, and exits 143.
    process, log = _start(model_dir, data_dir, total)
    _wait_for_checkpoint(process, model_dir, 4)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    log.close()
    terminated_at = max(_checkpoint_steps(model_dir))
    assert terminated_at >= 4
    assert f"SIGTERM at step {terminated_at}" in open(log.name).read()
    _assert_checkpoints_readable(model_dir)

    # SIGKILL at a random moment after the next checkpoint: nothing breaks.
    process, log = _start(model_dir, data_dir, total)
    _wait_for_checkpoint(process, model_dir, terminated_at + 4)
    time.sleep(random.Random(0).uniform(0.0, 0.5))
    process.kill()
    process.wait(timeout=60)
    log.close()
    killed_at = max(_checkpoint_steps(model_dir))
    assert killed_at < total, "the run ended before the kill; raise `total`"
    assert f"resumed from {model_dir}/ckpt-{terminated_at} at step {terminated_at}" in open(
        log.name).read()
    _assert_checkpoints_readable(model_dir)

    # The rerun resumes from the newest checkpoint and ends at the last step.
    process, log = _start(model_dir, data_dir, total)
    assert process.wait(timeout=600) == 0, open(log.name).read()[-3000:]
    log.close()
    text = open(log.name).read()
    assert f"resumed from {model_dir}/ckpt-{killed_at} at step {killed_at}" in text
    assert max(_checkpoint_steps(model_dir)) == total
    assert f"step {killed_at + 1}/{total}" in text and f"step {killed_at}/{total}" not in text
    _assert_checkpoints_readable(model_dir)


def _scalars(model_dir):
    """{tag: [(step, value)]} from every TensorBoard events file in model_dir."""
    from tensorboard.backend.event_processing import event_accumulator
    values = {}
    for name in os.listdir(model_dir):
        if name.startswith("events.out.tfevents"):
            events = event_accumulator.EventAccumulator(
                os.path.join(model_dir, name), size_guidance={"tensors": 0})
            events.Reload()
            for tag in events.Tags()["tensors"]:
                values.setdefault(tag, []).extend(
                    (e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag))
    return values


def test_eval_mode_evaluates_the_checkpoints_a_training_run_wrote(tmp_path):
    _image_folder(tmp_path / "images")
    fields = dict(train_steps=3, checkpoint_steps=3, train_split="train[:75%]",
                  eval_split="train[75%:]", eval_batch_size=8)
    both = job.run(_bad_config(tmp_path, mode="train_then_eval",
                               model_dir=str(tmp_path / "both"), **fields))
    job.run(_bad_config(tmp_path, mode="train", model_dir=str(tmp_path / "split"), **fields))
    evaluated = job.run(_bad_config(tmp_path, mode="eval", model_dir=str(tmp_path / "split"),
                                    **fields))
    assert evaluated["eval"]["global_step"] == 3
    assert evaluated["eval"]["label_top_1_accuracy"] == both["eval"]["label_top_1_accuracy"]
    with pytest.raises(errors.CheckpointError, match=r"does not (hold|fit) every variable of "
                       r"the model of .*split \(another architecture\?\)"):
        job.run(_bad_config(tmp_path, mode="eval", model_dir=str(tmp_path / "split"),
                            resnet_depth=34, **fields))


def test_train_then_eval_writes_results_summaries_and_a_matching_export(tmp_path):
    _image_folder(tmp_path / "images")
    config = _bad_config(tmp_path, mode="train_then_eval", train_steps=3, checkpoint_steps=3,
                         train_split="train[:75%]", eval_split="train[75%:]",
                         eval_batch_size=8, keep_hub_module_max=1)
    results = job.run(config, after_eval=[ExportAfterEval()])
    model_dir = tmp_path / "run"
    assert results["global_step"] == 3
    saved = json.loads((model_dir / "result.json").read_text())
    assert saved["eval"]["num_eval_examples"] == 16
    assert saved["eval"]["label_top_1_accuracy"] == results["eval"]["label_top_1_accuracy"]
    scalars = _scalars(model_dir)
    assert [step for step, _ in scalars["train/contrast_loss"]] == [3]  # one loop of 3 steps
    assert scalars["eval/label_top_1_accuracy"] == [
        (3, pytest.approx(results["eval"]["label_top_1_accuracy"]))]
    assert len(scalars["learning_rate"]) == len(scalars["train/total_loss"])
    # The export after eval holds the trained weights: its features equal the model's.
    module = tf.saved_model.load(results["eval"]["saved_model"])
    images = tf.random.stateless_uniform([4, 16, 16, 3], [1, 2])
    from tf_simclr.models import simclr as model_lib
    model = model_lib.build_model(config, num_classes=2)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(str(model_dir))).expect_partial()
    np.testing.assert_allclose(module(images, training=False).numpy(),
                               model(images, training=False)["final_avg_pool"].numpy(),
                               rtol=1e-5, atol=1e-6)
