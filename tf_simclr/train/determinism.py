"""`--deterministic`: the same flags and seed give bitwise the same training on CPU.

What made two runs differ (bench/README.md has the bisection): Grappler's memory
optimizer rewrites an AddN of three or more tensors that are live at the graph's
estimated memory peak into a temporary variable plus one AssignAdd per input, so
that each input can be freed as soon as it is added. It does so when that peak
exceeds 80% of the device memory Grappler assumes, which is 256 MiB for a CPU: at
the quickstart's size (2 x 256 views of 28 px) it rewrites the input gradient of
the last BatchNorm. The AssignAdds run in the order their inputs finish, which
varies with thread timing, and float addition is not associative: a few ulps in
one gradient, grown by training. TensorFlow's op determinism does not cover this
pass, and no public switch turns it off alone, so Grappler is turned off as a
whole (no slower on the quickstart network, bench/README.md). Training data,
augmentation and initial weights are already functions of `--seed`.

These are settings of the whole process, kept after the run.
"""

import tensorflow as tf
from absl import logging

from tf_simclr.errors import ConfigError


def enable(strategy):
    """Makes training under `strategy` bitwise reproducible; ConfigError where it is not.

    Call it before the train step is traced: Grappler options apply to functions
    instantiated afterwards.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ConfigError("--deterministic is not supported with several workers (TF_CONFIG "
                          "names a cluster); expected a single-host CPU run.")
    devices = strategy.extended.worker_devices
    others = [d for d in devices if tf.DeviceSpec.from_string(d).device_type != "CPU"]
    if others:
        raise ConfigError(f"--deterministic is verified on CPUs only, but the replicas would "
                          f"run on {', '.join(others)}; expected CPU replicas (hide the GPUs "
                          "with CUDA_VISIBLE_DEVICES= or use --cpu_replicas).")
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    logging.info("--deterministic: TensorFlow op determinism on, Grappler graph rewrites "
                 "off, %d replica(s) on CPU", len(devices))
