"""Choosing and building the tf.distribute strategy for a run.

Order of precedence, as the official run.py plus multi-worker support:
  1. `use_tpu`: TPUStrategy on the named TPU (or `master`).
  2. TF_CONFIG naming more than one task: MultiWorkerMirroredStrategy.
  3. `cpu_replicas > 1`: MirroredStrategy over that many logical CPU devices
     (correctness runs on a CPU machine; the replicas share the cores).
  4. Visible GPUs: MirroredStrategy over all of them.
  5. Otherwise one device (the CPU).
"""

import json
import os

import tensorflow as tf

from tf_simclr.config import ConfigError


def _tf_config_task_count():
    """Number of tasks in TF_CONFIG's cluster (0 when unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except ValueError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}); expected "
                          '{"cluster": {"worker": [...]}, "task": {...}}.') from None
    return sum(len(tasks) for role, tasks in cluster.items() if role in ("chief", "worker"))


def split_cpu(num_replicas):
    """Splits the physical CPU into `num_replicas` logical devices; returns their names.

    Must run before TensorFlow initialises its devices; if it already has, the
    existing logical devices are used when there are enough of them.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
    except RuntimeError:
        pass  # devices already initialised (e.g. by a test harness)
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < num_replicas:
        raise ConfigError(
            f"--cpu_replicas={num_replicas} but TensorFlow already initialised "
            f"{len(logical)} CPU device(s); expected the flag to be applied before "
            "any TensorFlow op runs.")
    return [d.name for d in logical[:num_replicas]]


def on_accelerators(hardware):
    """Whether make_strategy(hardware) puts the replicas on TPUs or GPUs."""
    if hardware.use_tpu:
        return True
    if _tf_config_task_count() <= 1 and hardware.cpu_replicas > 1:
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def make_strategy(hardware):
    """Builds the strategy named by a HardwareConfig (see the module docstring)."""
    if hardware.use_tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=hardware.tpu_name or hardware.master, zone=hardware.tpu_zone,
            project=hardware.gcp_project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if _tf_config_task_count() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if hardware.cpu_replicas > 1:
        return tf.distribute.MirroredStrategy(split_cpu(hardware.cpu_replicas))
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def check_batch_divides(batch_size, strategy, flag):
    """The global batch must split evenly over the replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ConfigError(
            f"--{flag}={batch_size} does not divide evenly over {replicas} replicas; "
            f"expected a multiple of {replicas}.")


def is_chief(strategy):
    """True on the one task that writes checkpoints, summaries and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def check_single_host(strategy, what):
    """ConfigError when `strategy` spans several hosts (TF_CONFIG with many tasks)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ConfigError(f"{what} runs on one host, but TF_CONFIG names "
                          f"{_tf_config_task_count()} tasks; expected it unset (GPUs and "
                          "TPUs of one host are used through their strategy).")
