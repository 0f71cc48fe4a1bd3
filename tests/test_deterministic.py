"""--deterministic: two real runs with the same flags give bitwise the same training.

Real `python -m tf_simclr.run` processes, because what the flag turns on (op
determinism, Grappler off) is process-wide and stays on after the run. The network
is the quickstart's (ResNet-18 at 1/8 width, 28 px, batch 256) on a generated image
folder: the cause of the drift, Grappler's memory optimizer turning an AddN into an
accumulation in arrival order, only acts when the train step's estimated memory
peak exceeds 80% of 256 MiB, which the tests' usual 16 px runs never reach. The
third run checks that this size does have the rewrite without the flag (from the
graph TensorFlow dumps), so the equality is not vacuous. Runs without the flag are
not compared: how often they drift depends on thread timing (every pair in
bench/README.md drifted by step 5, but an idle machine may not).
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import testutil
from tf_simclr import errors
from tf_simclr.train import determinism

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12  # drift began at steps 3-5 in the bisection


def _image_folder(root):
    return testutil.two_class_image_folder(root, per_class=256, size=28)


def _start(data_dir, model_dir, *extra, steps=STEPS, dump_dir=None):
    env = dict(os.environ)
    if dump_dir:  # every optimisation stage of the train loop's graph, as .pbtxt
        env.update(TF_DUMP_GRAPH_PREFIX=str(dump_dir), TF_DUMP_GRAPH_NAME_FILTER="loop")
    log = open(f"{model_dir}.log", "w")
    command = [sys.executable, "-m", "tf_simclr.run", "--flagfile=flags/quickstart.cfg",
               "--dataset=image_folder", f"--data_dir={data_dir}", "--train_split=train",
               "--eval_split=train",
               "--mode=train", "--probe=none", "--knn_monitor_epochs=0",
               "--keep_hub_module_max=0", f"--train_steps={steps}",
               f"--checkpoint_steps={steps}", "--steps_per_loop=1",
               f"--model_dir={model_dir}", *extra]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _finish(process, model_dir):
    assert process.wait(timeout=900) == 0, open(f"{model_dir}.log").read()[-3000:]
    return open(f"{model_dir}.log").read()


def _losses(model_dir):
    """[{step, metric: value}] of every loop (one step each), float32 values exactly."""
    with open(os.path.join(model_dir, "learning_curve.json"), encoding="utf-8") as f:
        return json.load(f)


def _checkpoint(model_dir):
    reader = tf.train.load_checkpoint(str(model_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _rewritten_addns(dump_dir):
    """TemporaryVariable nodes (one per rewritten AddN) in the graphs as executed."""
    names = [n for n in os.listdir(dump_dir) if n.endswith("after_partition_passes.pbtxt")]
    assert names, os.listdir(dump_dir)
    return sum(open(os.path.join(dump_dir, n)).read().count('op: "TemporaryVariable"')
               for n in names)


def test_two_deterministic_runs_train_bitwise_alike(tmp_path):
    data_dir = _image_folder(tmp_path / "images")
    for name in ("dump_a", "dump_default"):
        os.makedirs(tmp_path / name)
    runs = {name: tmp_path / name for name in ("a", "b", "default")}
    # The three at once: thread timing differs between them even more than in turn.
    processes = {
        "a": _start(data_dir, runs["a"], "--deterministic", dump_dir=tmp_path / "dump_a"),
        "b": _start(data_dir, runs["b"], "--deterministic"),
        "default": _start(data_dir, runs["default"], steps=1,
                          dump_dir=tmp_path / "dump_default"),
    }
    logs = {name: _finish(process, runs[name]) for name, process in processes.items()}

    assert "--deterministic: TensorFlow op determinism on, Grappler graph rewrites off" in logs["a"]
    assert _rewritten_addns(tmp_path / "dump_default") >= 1  # the cause is present here
    assert _rewritten_addns(tmp_path / "dump_a") == 0

    a, b = _losses(runs["a"]), _losses(runs["b"])
    assert [p["step"] for p in a] == list(range(1, STEPS + 1))
    assert a == b  # every metric of every step, exactly
    assert len({p["contrast_loss"] for p in a}) == STEPS  # it trained
    weights_a, weights_b = _checkpoint(runs["a"]), _checkpoint(runs["b"])
    assert weights_a.keys() == weights_b.keys()
    different = [name for name in weights_a
                 if not np.array_equal(weights_a[name], weights_b[name])]
    assert not different  # model, optimizer slots and step


def test_replicas_off_the_cpu_are_refused_before_anything_is_switched():
    on_gpu = types.SimpleNamespace(extended=types.SimpleNamespace(
        worker_devices=("/job:localhost/replica:0/task:0/device:GPU:0",)))
    before = tf.config.optimizer.get_experimental_options()
    with pytest.raises(errors.ConfigError, match=r"--deterministic is verified on CPUs only, "
                       r"but the replicas would run on /job:localhost/.*/device:GPU:0"):
        determinism.enable(on_gpu)
    assert tf.config.optimizer.get_experimental_options() == before
