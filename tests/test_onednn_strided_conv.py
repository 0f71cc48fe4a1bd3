"""The oneDNN strided 1x1 convolution bug: tf_simclr's layers never reach it.

TensorFlow 2.21's oneDNN backward of a strided 1x1 convolution corrupts the heap on
AVX-512 CPUs for small channel counts, mostly at odd batch sizes (the ResNet shortcut
projections of narrow networks: bench/sweep_onednn_conv.py has the extent). The
ResNet runs those convolutions as subsampling + a stride-1 1x1 convolution
(`layers.SubsampledPointwiseConv2D`). Training steps run in child processes, so a
crash fails the test instead of killing the suite; each oneDNN-on child is compared
with the same step in float64 (Eigen), and a oneDNN-off child too.
`conftest.pytest_report_header` says whether this machine has the bug at all.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from hub_export import exporter
from tf_simclr import config as config_lib
from tf_simclr.models import layers, resnet
from tf_simclr.models import simclr as model_lib

CHILDREN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "children")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD_BATCHES = (1, 3, 5, 13)
# Each float32 backend is measured against the same step in float64, per variable as
# max |error| / max |gradient|. Measured on Zen 4 (fused BatchNorm, 4 odd batches):
# oneDNN up to 7.2e-5, Eigen up to 4.0e-4 (a 224 px stem BatchNorm beta, a sum of 650k
# terms), so they can be 4e-4 apart while both round correctly. A wrong kernel or a
# corrupted heap is off by O(1).
ONEDNN_RTOL = 2.5e-4
# Eigen (oneDNN off) is the reference implementation: this only checks the float64
# child computes the same step.
EIGEN_RTOL = 1e-3
# The hub module is float32 only, so its oneDNN step is compared with its Eigen one: two
# roundings within the bounds above are at most their sum apart (measured: 1.0e-4 here,
# 4.2e-4 in the model's own step at 224 px).
HUB_GRADIENT_RTOL = ONEDNN_RTOL + EIGEN_RTOL


def _start(script, args, onednn):
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")
    env.pop("TF_USE_LEGACY_KERAS", None)
    return subprocess.Popen([sys.executable, os.path.join(CHILDREN, script)]
                            + [str(a) for a in args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_children(tmp_path, script, runs):
    """Runs `script OUT.npz *args` for each (name, onednn, args) at once -> {name: arrays}."""
    outputs = {name: tmp_path / f"{name}.npz" for name, _, _ in runs}
    children = {name: (_start(script, [outputs[name], *args], onednn), onednn)
                for name, onednn, args in runs}
    for name, (child, onednn) in children.items():
        _, stderr = child.communicate(timeout=900)
        assert child.returncode == 0, (
            f"{script} {name} with TF_ENABLE_ONEDNN_OPTS={onednn} exited with "
            f"{child.returncode} (negative: killed by that signal):\n{stderr[-3000:]}")
    return {name: np.load(out) for name, out in outputs.items()}


def _relative_errors(arrays, reference):
    """{key: max |arrays - reference| / max |reference|}."""
    assert sorted(arrays.files) == sorted(reference.files)
    return {key: float(np.max(np.abs(arrays[key] - reference[key])))
            / max(float(np.max(np.abs(reference[key]))), 1e-12) for key in reference.files}


@pytest.mark.parametrize("height, width, batch", [(7, 7, 5), (8, 8, 3), (28, 28, 1),
                                                  (13, 10, 2), (56, 56, 5)])
@pytest.mark.parametrize("strides", [2, 3])
def test_subsampled_pointwise_conv_equals_the_strided_conv(height, width, batch, strides):
    # The reference runs in float64, which TensorFlow computes with Eigen (oneDNN has
    # no float64 convolution), i.e. the oneDNN-off strided convolution.
    rng = np.random.default_rng(strides * 100 + height)
    images = rng.standard_normal((batch, height, width, 8))
    layer = layers.SubsampledPointwiseConv2D(16, 1, strides=strides, padding="valid",
                                             use_bias=False)
    layer.build((None, None, None, 8))
    kernel = layer.kernel.numpy().astype(np.float64)
    x32, x64 = tf.constant(images, tf.float32), tf.constant(images, tf.float64)
    w64 = tf.constant(kernel)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x32, x64, w64])
        ours = layer(x32)
        reference = tf.nn.conv2d(x64, w64, strides=strides, padding="VALID")
        ours_loss, reference_loss = tf.reduce_sum(ours ** 2), tf.reduce_sum(reference ** 2)
    assert ours.shape == reference.shape == layer.compute_output_shape(images.shape)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)
    for ours_grad, reference_grad in (
            (tape.gradient(ours_loss, x32), tape.gradient(reference_loss, x64)),
            (tape.gradient(ours_loss, layer.kernel), tape.gradient(reference_loss, w64))):
        np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-4,
                                   atol=1e-4 * float(np.max(np.abs(reference_grad))))


def _sublayers(layer):
    """Every Keras layer held as an attribute under `layer`, depth first."""
    for value in vars(layer).values():
        if isinstance(value, keras.layers.Layer):
            yield value
            yield from _sublayers(value)


def test_strided_shortcuts_are_subsampled_with_unchanged_variables(tmp_path):
    model = resnet.ResNet(50, width_multiplier=0.125)
    model(tf.zeros([1, 64, 64, 3]))
    strided_1x1 = [layer for layer in set(_sublayers(model))
                   if isinstance(layer, keras.layers.Conv2D)
                   and layer.kernel_size == (1, 1) and layer.strides != (1, 1)]
    # The shortcut projections of block groups 2-4 are the only strided 1x1 convolutions.
    assert len(strided_1x1) == 3
    assert all(isinstance(layer, layers.SubsampledPointwiseConv2D) for layer in strided_1x1)
    shortcut = model.block_group2.block1.shortcut.conv
    assert shortcut.kernel.path == "resnet/block_group2/block1/shortcut/conv/kernel"
    assert tuple(shortcut.kernel.shape) == (1, 1, 32, 64)
    assert shortcut.get_config() == keras.layers.Conv2D.from_config(
        shortcut.get_config()).get_config()
    # Checkpoint keys are attribute paths, so a plain Conv2D model restores the same tensors.
    plain = keras.layers.Conv2D.from_config(shortcut.get_config())
    plain.build((None, None, None, 32))
    path = tf.train.Checkpoint(conv=shortcut).write(str(tmp_path / "shortcut"))
    tf.train.Checkpoint(conv=plain).read(path).assert_consumed()
    np.testing.assert_array_equal(plain.kernel.numpy(), shortcut.kernel.numpy())


@pytest.mark.parametrize("width", [0.0625, 0.125])
@pytest.mark.parametrize("image_size", [28, 224])
def test_training_step_at_odd_batches_rounds_like_float64(tmp_path, width, image_size):
    args = [width, image_size, *ODD_BATCHES]
    runs = _run_children(tmp_path, "train_step_gradients.py", [
        ("onednn_on", "1", ["float32", *args]), ("onednn_off", "0", ["float32", *args]),
        ("float64", "0", ["float64", *args])])
    assert any(key.endswith("shortcut/conv/kernel") for key in runs["float64"].files)
    on = _relative_errors(runs["onednn_on"], runs["float64"])
    off = _relative_errors(runs["onednn_off"], runs["float64"])
    for key, error in on.items():
        assert off[key] <= EIGEN_RTOL, f"{key}: Eigen float32 {off[key]:.2e} from float64"
        assert error <= ONEDNN_RTOL, (
            f"{key}: oneDNN {error:.2e} from float64 (Eigen: {off[key]:.2e})")


@pytest.mark.parametrize("width", [0.0625, 0.125])
def test_hub_module_training_step_at_odd_batches_equals_onednn_off(tmp_path, width):
    config = config_lib.Config().replace(resnet_depth=18, width_multiplier=width,
                                         image_size=28, model_dir=str(tmp_path))
    model = model_lib.build_model(config, num_classes=0)
    module = exporter.export_saved_model(model, config, str(tmp_path / "module"))
    runs = _run_children(tmp_path, "hub_train_step_gradients.py", [
        (f"onednn_{flag}", flag, [module, 28, *ODD_BATCHES]) for flag in ("1", "0")])
    for key, error in _relative_errors(runs["onednn_1"], runs["onednn_0"]).items():
        assert error <= HUB_GRADIENT_RTOL, f"{key}: {error:.2e} of the largest gradient"
