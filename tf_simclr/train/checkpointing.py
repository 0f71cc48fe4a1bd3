"""Checkpoints: save and resume a run, find and restore a checkpoint, check the disk.

The one module that resolves "a checkpoint prefix or a directory's latest"
(`resolve`), restores with a clear error (`restore`, `restore_pretrained` for
fine-tuning) and checks that model_dir can hold a run (`check_model_dir_writable`).
A run's checkpoint holds the model and the optimizer; the optimizer's `iterations` is the
global step, and the input pipeline is a deterministic function of the step (see
input_pipeline.py), so {model, optimizer} is the whole training state.

Why a kill cannot corrupt the latest checkpoint: TensorFlow writes a checkpoint's
data and index under a temporary name and renames them into place, and only then
does CheckpointManager rewrite its `checkpoint` state file, itself by an atomic
rename. A process killed at any moment leaves the state file naming the previous,
complete checkpoint. Should a listed checkpoint still fail to read (a disk fault),
`restore_latest` falls back to the newest one that reads, and says so.
"""

import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import trackable_object_graph_pb2

from tf_simclr.errors import CheckpointError, StorageError
from tf_simclr.train import strategy as strategy_lib


class Checkpointer:
    """Keeps the last `max_to_keep` checkpoints of {model, optimizer} in model_dir.

    On multi-worker runs every worker must take part in a save (reading mirrored
    variables is collective); workers other than the chief write into a private
    directory that is deleted afterwards.
    """

    def __init__(self, model_dir, model, optimizer, max_to_keep, strategy):
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self._step = optimizer.iterations
        self._is_chief = strategy_lib.is_chief(strategy)
        if self._is_chief:
            directory = model_dir
        else:
            directory = os.path.join(model_dir, f".worker_{strategy.cluster_resolver.task_id}")
        self.directory = directory
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, directory, max_to_keep=max_to_keep, step_counter=self._step)

    @property
    def latest(self):
        """Path prefix of the newest checkpoint, or None."""
        return self._manager.latest_checkpoint

    def restore_latest(self):
        """Restores the newest readable checkpoint; returns its step (0 if none)."""
        for path in reversed(self._manager.checkpoints):
            try:
                status = self._checkpoint.restore(path)
                status.assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                logging.warning("checkpoint %s could not be restored (%s); trying an older one",
                                path, str(e).splitlines()[0])
                continue
            step = int(self._step.numpy())
            logging.info("resumed from %s at step %d", path, step)
            return step
        if self._manager.checkpoints:
            raise CheckpointError(f"no checkpoint in {self.directory} could be restored; "
                              "expected at least one readable checkpoint, or an empty model_dir.")
        return 0

    def save(self):
        """Writes a checkpoint named after the current step; returns its path."""
        path = self._manager.save(checkpoint_number=self._step)
        if not self._is_chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        return path


def checkpoint_bytes(model):
    """Rough size of one checkpoint: weights plus up to two optimizer slots each."""
    return 3 * sum(int(tf.size(v)) * tf.as_dtype(v.dtype).size for v in model.variables)


def resolve(path, flag="--checkpoint"):
    """A checkpoint prefix, or a directory (its latest checkpoint) -> the prefix.

    CheckpointError naming `flag` and the path when there is no checkpoint there.
    Works on any file system TensorFlow reaches (gs://...).
    """
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"{flag}={path} is a directory without checkpoints (no checkpoint in "
                f"{path}); expected a model_dir written by tf_simclr.run or a prefix such "
                f"as {os.path.join(path, 'ckpt-1000')}.")
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise CheckpointError(f"{flag}={path} is not a checkpoint (no {path}.index); "
                              "expected a prefix such as model_dir/ckpt-1000 or a model_dir "
                              "that holds checkpoints.")
    return path


_HEAD_KERNEL_PATH = (("model",), ("supervised_head",), ("dense",), ("kernel", "_kernel"))


def num_classes_in_checkpoint(path):
    """The supervised head's class count stored in checkpoint prefix `path`, 0 if none.

    Found through the checkpoint's object graph (model -> supervised_head -> dense ->
    kernel), not by key: a training checkpoint saves each variable once, under the
    first path to it, which may be the optimizer's list of trainable variables.
    """
    reader = tf.train.load_checkpoint(path)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    node = graph.nodes[0]
    for names in _HEAD_KERNEL_PATH:
        child = next((c for c in node.children if c.local_name in names), None)
        if child is None:
            return 0
        node = graph.nodes[child.node_id]
    key = next((a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE"), None)
    shape = reader.get_variable_to_shape_map().get(key) if key else None
    return int(shape[1]) if shape is not None and len(shape) == 2 else 0


def restore(path, what, **objects):
    """Restores `objects` (tf.train.Checkpoint keywords) from prefix `path`.

    Every variable of `objects` must be in the checkpoint with its shape (extra ones,
    such as the optimizer's, may be there); otherwise CheckpointError saying that
    `path` does not hold (or fit) every `what` (e.g. "variable of the model of
    DIR/config.json"). Returns the load status.
    """
    try:
        status = tf.train.Checkpoint(**objects).restore(path)
    except ValueError as error:  # a variable of another shape
        raise CheckpointError(f"checkpoint {path} does not fit every {what} (another "
                              f"architecture?): {str(error).splitlines()[0]}") from None
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise CheckpointError(f"checkpoint {path} does not hold every {what} "
                              f"(another architecture?): {error}") from None
    return status.expect_partial()


def restore_pretrained(model, path):
    """Restores a built SimCLRModel's encoder and projection head from a training run.

    `path` is a prefix or a model_dir (`resolve`). Nothing else is read: the old
    supervised head, the optimizer and the step stay as they are, so a classifier with
    another number of classes is fine. CheckpointError if the model is not built, or
    an encoder/head variable is missing or of another shape (another depth or width).
    Returns the load status.
    """
    if not model.built:
        raise CheckpointError("restore_pretrained needs a built model (build_model builds "
                              "it); received an unbuilt one.")
    parts = tf.train.Checkpoint(encoder=model.encoder, projection_head=model.projection_head)
    return restore(resolve(path), "encoder and projection head variable of this model",
                   model=parts)


def check_model_dir_writable(model_dir, needed_bytes):
    """Fails early, with the reason, when model_dir cannot hold the run's output."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".write_test_"):
            pass
    except OSError as e:
        raise StorageError(f"--model_dir={model_dir} is not writable ({e.strerror}); "
                          "expected a directory this process can create files in.") from None
    free = shutil.disk_usage(model_dir).free
    if free < needed_bytes:
        raise StorageError(
            f"--model_dir={model_dir} has {free / 2**20:.1f} MiB free; this run needs about "
            f"{needed_bytes / 2**20:.1f} MiB for its checkpoints; expected more free space.")
