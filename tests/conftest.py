"""Test harness: 4 logical CPU devices, seeded Keras, no GPUs.

The logical devices must exist before TensorFlow initialises its devices, so this
runs at import, before any test module imports tensorflow. Single-device tests use
the default device (CPU:0); distribution tests build MirroredStrategy over
`testutil.cpu_devices(n)`.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from testutil import NUM_LOGICAL_CPUS  # noqa: E402

tf.config.set_visible_devices([], "GPU")
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)


@pytest.fixture(autouse=True)
def _seed():
    import keras
    keras.utils.set_random_seed(1234)
    yield


def pytest_report_header(config):
    """Whether this machine has the oneDNN strided 1x1 convolution bug the ResNet avoids."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "children", "onednn_strided_conv_repro.py")
    child = subprocess.run([sys.executable, script], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1"))
    if child.returncode == 0:
        verdict = "absent (TensorFlow's reproduction runs)"
    else:
        verdict = (f"PRESENT (TensorFlow's reproduction exited with {child.returncode}); "
                   "tf_simclr's layers avoid it, tests/test_onednn_strided_conv.py checks that")
    return f"oneDNN strided 1x1 conv backward bug on this CPU: {verdict}"
