"""--train_mode=distill: the loss, the fixed teacher, convergence to the teacher,
replicas, resume, and bad teachers.

Runs on in-memory sources (testutil.random_source) with 16 px ResNet-18s at 1/16
width; the teacher is fine-tuned from scratch here.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from testutil import (
    assert_same_history,
    assert_same_weights,
    random_source,
    resume_after,
    tiny_config,
    train,
    weights,
)
from tf_simclr import config as config_lib
from tf_simclr.errors import CheckpointError, ConfigError
from tf_simclr.train import checkpointing, losses
from tf_simclr.train import teacher as teacher_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 0.1, 2.5])
def test_distillation_loss_equals_numpy(temperature):
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(0, 3, (6, 5)), rng.normal(0, 3, (6, 5))
    targets = np.exp(_log_softmax(teacher / temperature))
    expected = np.mean(-np.sum(targets * _log_softmax(student / temperature), -1))
    got = losses.distillation_loss(tf.constant(teacher), tf.constant(student), temperature)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # No gradient flows into the teacher's logits; the student's is (p_S - p_T) / (T B).
    teacher_t, student_t = tf.Variable(teacher), tf.Variable(student)
    with tf.GradientTape() as tape:
        loss = losses.distillation_loss(teacher_t, student_t, temperature)
    grad_teacher, grad_student = tape.gradient(loss, [teacher_t, student_t])
    assert grad_teacher is None
    expected_grad = (np.exp(_log_softmax(student / temperature)) - targets) / (
        temperature * len(teacher))
    np.testing.assert_allclose(grad_student.numpy(), expected_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("weight", [0.0, 0.7])
def test_distillation_objective_with_supervised_term_equals_numpy(weight):
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(0, 3, (8, 4)), rng.normal(0, 3, (8, 4))
    labels = np.array([2, -1, 0, -1, 3, 1, -1, 2])  # -1: outside the labelled subset
    temperature = 0.5
    targets = np.exp(_log_softmax(teacher / temperature))
    distill = np.mean(-np.sum(targets * _log_softmax(student / temperature), -1))
    labelled = labels >= 0
    supervised = np.mean(-_log_softmax(student)[labelled, labels[labelled]])
    got = losses.distillation_objective(tf.constant(teacher), tf.constant(student),
                                        tf.constant(labels), temperature, weight)
    np.testing.assert_allclose(float(got["distill_loss"]), distill, rtol=1e-5)
    np.testing.assert_allclose(float(got["loss"]), distill + weight * supervised, rtol=1e-5)
    assert ("supervised_loss" in got) == bool(weight)
    # A batch without any label adds nothing.
    none = losses.distillation_objective(tf.constant(teacher), tf.constant(student),
                                         tf.fill([8], -1), temperature, weight)
    np.testing.assert_allclose(float(none["loss"]), distill, rtol=1e-5)


def _teacher_dir(root, source, steps=40):
    """A teacher fine-tuned from scratch on `source` for `steps` steps."""
    config = tiny_config(root / "teacher", train_mode="finetune", finetune_from_scratch=True,
                         optimizer="momentum", learning_rate=0.4, train_steps=steps,
                         checkpoint_steps=steps, steps_per_loop=steps)
    state, _ = train(config, source)
    config_lib.save(config, str(root / "teacher"))
    return root / "teacher", state


def _distill_config(model_dir, teacher, **fields):
    values = dict(train_mode="distill", teacher=str(teacher), optimizer="momentum",
                  learning_rate=0.4, train_steps=6, checkpoint_steps=2, steps_per_loop=1)
    values.update(fields)
    return tiny_config(model_dir, **values)


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    source = random_source()
    teacher_dir, teacher_state = _teacher_dir(root, source)
    return root, source, teacher_dir, teacher_state


def test_teacher_is_fixed_and_gets_no_gradient(taught):
    root, source, teacher_dir, teacher_state = taught
    before = weights(teacher_state.model)
    state, loop = train(_distill_config(root / "fixed", teacher_dir), source)
    teacher = state.teacher
    assert loop.history and "distill_loss" in loop.history[-1][1]
    # Not trainable, not in the optimizer, not in the student's checkpoint.
    assert not teacher.model.trainable_variables
    optimized = {id(v) for v in state.optimizer.variables}
    assert not any(id(v) in optimized for v in teacher.model.variables)
    saved = {name for name, _ in tf.train.list_variables(state.checkpointer.latest)}
    assert not any("teacher" in name for name in saved)
    after = weights(teacher.model)
    # The same values (BatchNorm statistics included) as the teacher's checkpoint.
    assert after.keys() == before.keys()
    assert_same_weights(before, after, rtol=0, atol=0)


def test_student_converges_to_the_teacher_on_held_out_images(taught):
    root, source, teacher_dir, teacher_state = taught
    state, _ = train(_distill_config(root / "converge", teacher_dir, train_steps=120,
                                     checkpoint_steps=120, steps_per_loop=40,
                                     distill_temperature=1.0), source)
    images = np.stack([ex["image"].numpy() for ex in source.examples("test")]) / 255.0
    images = tf.constant(images, tf.float32)
    teacher = np.argmax(state.teacher.logits(images).numpy(), -1)
    student = np.argmax(state.model(images, training=False)["logits_sup"].numpy(), -1)
    chance = max(np.mean(teacher == c) for c in range(3))
    agreement = np.mean(teacher == student)
    assert agreement >= 0.85 and agreement > chance + 0.2, (agreement, chance)


def _with_hidden_labels(source):
    """The source with most labels of the second half hidden (-1): each replica's
    pipeline reads one half, so their batches hold different labelled counts."""
    from testutil import ArraySource
    images, labels = source._splits["train"]
    labels = labels.copy()
    half = len(labels) // 2
    labels[half:] = np.where(np.arange(len(labels) - half) % 4 == 0, labels[half:], -1)
    return ArraySource({"train": (images, labels), "test": source._splits["test"]},
                       source.info.num_classes)


@pytest.mark.parametrize("supervised", [False, True])
def test_two_replicas_follow_the_one_device_run(taught, supervised):
    root, source, teacher_dir, _ = taught
    name = "supervised" if supervised else "distill"
    config = _distill_config(root / f"one_{name}", teacher_dir, global_bn=True, train_steps=4,
                             distill_supervised_weight=0.5 if supervised else 0.0)
    if supervised:  # the supervised term is the global batch's mean over its labels
        source = _with_hidden_labels(source)
    one_state, one = train(config, source, replicas=1)
    two_state, two = train(config.replace(model_dir=str(root / f"two_{name}")), source,
                           replicas=2)
    assert ("supervised_loss" in one.history[-1][1]) == supervised
    assert [s for s, _ in one.history] == [1, 2, 3, 4]
    assert_same_history(one.history, two.history, rtol=1e-4, atol=1e-6)
    assert_same_weights(weights(one_state.model), weights(two_state.model))


def test_resume_mid_run_ends_exactly_like_the_uninterrupted_run(taught):
    root, source, teacher_dir, _ = taught
    config = _distill_config(root / "full", teacher_dir, keep_checkpoint_max=10,
                             distill_supervised_weight=0.5)
    full_state, full = train(config, source)
    assert "supervised_loss" in full.history[-1][1]
    resumed_state, resumed = resume_after(config, source, 2, root / "resumed")
    assert [s for s, _ in resumed.history] == [3, 4, 5, 6]
    assert_same_history(resumed.history, full.history[2:])
    assert_same_weights(weights(full_state.model), weights(resumed_state.model),
                        rtol=1e-5, atol=1e-6)


def test_class_count_of_a_training_checkpoint_is_found(taught):
    # A training checkpoint saves the classifier's kernel once, possibly under the
    # optimizer's path to it: the count comes from the object graph.
    _, _, teacher_dir, _ = taught
    prefix = tf.train.latest_checkpoint(str(teacher_dir))
    assert checkpointing.num_classes_in_checkpoint(prefix) == 3
    assert not any(n.startswith("model/supervised_head/")
                   for n, _ in tf.train.list_variables(prefix))


def test_bad_teachers_are_refused(taught, tmp_path):
    root, source, teacher_dir, _ = taught
    strategy = tf.distribute.get_strategy()
    with pytest.raises(ConfigError, match=r"predicts 3 classes; the data has 5"):
        teacher_lib.Teacher(str(teacher_dir), 5, 16, strategy)
    pretrained = tiny_config(tmp_path / "pretrained", lineareval_while_pretraining=False,
                             train_steps=1, checkpoint_steps=1)
    train(pretrained, source)
    config_lib.save(pretrained, str(tmp_path / "pretrained"))
    with pytest.raises(CheckpointError, match=r"has no classifier"):
        teacher_lib.Teacher(str(tmp_path / "pretrained"), 3, 16, strategy)
    with pytest.raises(CheckpointError, match=r"has no config.json beside it"):
        teacher_lib.Teacher(str(tmp_path), 3, 16, strategy)
    with pytest.raises(ConfigError, match=r"--train_mode=distill needs --teacher"):
        tiny_config(tmp_path / "x", train_mode="distill")


def test_hub_module_without_classifier_is_refused(tmp_path):
    from hub_export import exporter
    module = exporter.export_variant("r18_0.0625x", str(tmp_path / "hub"), image_size=16)
    with pytest.raises(CheckpointError, match=r"is a SavedModel without a logits_sup output"):
        teacher_lib.Teacher(module, 3, 16, tf.distribute.get_strategy())


def test_command_line_refuses_a_teacher_without_classifier_in_one_line(taught, tmp_path):
    from testutil import two_class_image_folder
    root, source, _, _ = taught
    images = two_class_image_folder(tmp_path / "images", per_class=4, size=16)
    pretrained = tiny_config(tmp_path / "pretrained", lineareval_while_pretraining=False,
                             train_steps=1, checkpoint_steps=1)
    train(pretrained, source)
    config_lib.save(pretrained, str(tmp_path / "pretrained"))
    done = subprocess.run(
        [sys.executable, "-m", "tf_simclr.run", "--train_mode=distill",
         f"--teacher={tmp_path / 'pretrained'}", "--dataset=image_folder",
         f"--data_dir={images}", "--train_split=train", "--eval_split=train",
         "--image_size=16", f"--model_dir={tmp_path / 'run'}", "--resnet_depth=18",
         "--width_multiplier=0.0625", "--train_steps=1", "--train_batch_size=4"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "has no classifier" in errors[0], done.stderr[-2000:]


def test_distill_job_reads_every_image_exports_the_student_and_it_teaches(taught, tmp_path):
    # --label_fraction with --train_mode=distill hides labels instead of dropping images:
    # 24 images, 6 labelled; one epoch of batch 4 is 24 // 4 + 1 = 7 steps (not 2).
    # The hub module exported after evaluation carries the student's classifier, and
    # serves as a --teacher in turn.
    from hub_export import exporter
    from hub_export.actions import ExportAfterEval
    from testutil import two_class_image_folder
    from tf_simclr import job
    _, _, teacher_dir, _ = taught
    images = two_class_image_folder(tmp_path / "images", per_class=8, size=16,
                                    names=("a", "b", "c"))
    config = tiny_config(
        tmp_path / "run", train_mode="distill", teacher=str(teacher_dir),
        dataset="image_folder", data_dir=str(images), train_split="train",
        eval_split="train", mode="train_then_eval", label_fraction=0.25,
        distill_supervised_weight=0.5, optimizer="momentum", learning_rate=0.1,
        train_steps=0, train_epochs=1, train_batch_size=4, checkpoint_steps=0,
        checkpoint_epochs=1, keep_hub_module_max=1)
    results = job.run(config, after_eval=[ExportAfterEval()])
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-7")
    assert 0 <= results["eval"]["label_top_1_accuracy"] <= 1
    module = str(tmp_path / "run" / "saved_model" / "7")
    student, _, _ = exporter.model_from_checkpoint(str(tmp_path / "run"))
    batch = tf.random.stateless_uniform([5, 16, 16, 3], seed=[3, 4])
    expected = student(batch, training=False)["logits_sup"].numpy()
    as_teacher = teacher_lib.Teacher(module, 3, 16, tf.distribute.get_strategy())
    np.testing.assert_allclose(as_teacher.logits(batch).numpy(), expected, rtol=1e-5,
                               atol=1e-5)
