"""Official SimCLR checkpoints on disk: which format, their variables, one tensor at a time.

Four formats (checkpoint_import.md §1-2 of the project's reference notes):

- `tf1_checkpoint`: a TF1 name-based checkpoint (prefix, or a directory with a
  `checkpoint` file): keys are graph names, `base_model/conv2d_5/kernel`;
- `tf1_hub_module`: a TF1 hub module directory (`tfhub_module.pb`): its
  `variables/variables` is a name-based checkpoint with the same graph names;
- `tf2_checkpoint`: an object-based checkpoint of the official tf2/run.py: keys are
  object paths, but the object graph keeps every variable's `full_name`
  (`resnet/block_group1/.../conv2d_5/kernel`);
- `tf2_saved_model`: the official TF2 SavedModel: index-based keys in
  `variables/variables`, full names again in its object graph.

`Source.variables` maps a name in graph form (the TF1 name, or the TF2 full name)
to its shape; `Source.read(name)` reads that one tensor (never the whole
checkpoint: R152 3x has 795 M parameters). Optimizer slots of TF2 checkpoints
are listed in `Source.slots`. Paths may be anything TensorFlow's file system
reaches (gs://...).
"""

import dataclasses
import os
import re
from typing import Dict, Optional

import tensorflow as tf
from tensorflow.core.protobuf import (
    meta_graph_pb2,
    saved_model_pb2,
    trackable_object_graph_pb2,
)

from tf_simclr.errors import CheckpointError

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
HUB_MARKER = "tfhub_module.pb"
SAVED_MODEL_FILE = "saved_model.pb"
_SLOT_MARK = "/.OPTIMIZER_SLOT/"


@dataclasses.dataclass
class Source:
    """The variables of one official checkpoint, by graph-form name."""
    path: str                 # what the user gave
    kind: str                 # tf1_checkpoint, tf1_hub_module, tf2_checkpoint, tf2_saved_model
    prefix: str               # the checkpoint prefix that holds the tensors
    variables: Dict[str, list]  # graph-form name -> shape
    keys: Dict[str, str]      # graph-form name -> checkpoint key
    slots: Dict[str, list]    # optimizer slot keys (TF2) -> shape
    step: Optional[int]       # the global step, when the checkpoint has one
    # A TF1 checkpoint's .meta file, or a TF1 hub module's saved_model.pb, if present.
    meta_graph: Optional[str] = None

    def __post_init__(self):
        self._reader = tf.train.load_checkpoint(self.prefix)

    def read(self, name):
        """The tensor of graph-form `name` as a NumPy array."""
        return self._reader.get_tensor(self.keys[name])


def open_source(path):
    """The Source at `path`; CheckpointError naming what was found otherwise."""
    if path.endswith(".zip"):
        raise CheckpointError(f"--source={path} is a zip archive; expected it unpacked "
                              "(unzip it and pass the folder or the model.ckpt-N prefix).")
    if tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(os.path.join(path, HUB_MARKER)):
            source = _tf1(path, "tf1_hub_module", _variables_prefix(path))
            graph = os.path.join(path, SAVED_MODEL_FILE)
            source.meta_graph = graph if tf.io.gfile.exists(graph) else None
            return source
        if tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
            return _tf2(path, "tf2_saved_model", _variables_prefix(path))
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise CheckpointError(
                f"--source={path} is a folder without a checkpoint, SavedModel or hub "
                f"module (no 'checkpoint' file, {SAVED_MODEL_FILE} or {HUB_MARKER}); "
                "expected an official checkpoint folder, prefix, SavedModel or hub module.")
    elif tf.io.gfile.exists(path + ".index"):
        prefix = path
    else:
        raise CheckpointError(
            f"--source={path} is not a checkpoint prefix (no {path}.index), checkpoint "
            "folder, SavedModel or TF1 hub module; expected one of those.")
    names = dict(tf.train.list_variables(prefix))
    if OBJECT_GRAPH_KEY in names:
        return _tf2(path, "tf2_checkpoint", prefix)
    return _tf1(path, "tf1_checkpoint", prefix)


def _variables_prefix(directory):
    prefix = os.path.join(directory, "variables", "variables")
    if not tf.io.gfile.exists(prefix + ".index"):
        raise CheckpointError(f"--source={directory} has no variables ({prefix}.index is "
                              "missing); expected a complete SavedModel or hub module.")
    return prefix


def _step(reader, key):
    if not reader.has_tensor(key):
        return None
    value = reader.get_tensor(key)
    return int(value) if getattr(value, "shape", None) == () else None


def _tf1(path, kind, prefix):
    listed = dict(tf.train.list_variables(prefix))
    reader = tf.train.load_checkpoint(prefix)
    meta = prefix + ".meta"
    step = _step(reader, "global_step")
    numbered = re.search(r"-(\d+)$", prefix)
    if step is None and numbered:  # Saver(global_step=N) names the files model.ckpt-N
        step = int(numbered.group(1))
    return Source(path=path, kind=kind, prefix=prefix, variables=listed,
                  keys={name: name for name in listed}, slots={}, step=step,
                  meta_graph=meta if tf.io.gfile.exists(meta) else None)


def _tf2(path, kind, prefix):
    listed = dict(tf.train.list_variables(prefix))
    reader = tf.train.load_checkpoint(prefix)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    variables, keys, slots = {}, {}, {}
    for node in graph.nodes:
        for attribute in node.attributes:
            key = attribute.checkpoint_key
            if attribute.name != "VARIABLE_VALUE" or key not in listed:
                continue
            if _SLOT_MARK in key:
                slots[key] = listed[key]
            elif attribute.full_name:
                # Two nodes of one variable cannot exist; two variables of one full
                # name can (process-global numbering restarts in a new process).
                if attribute.full_name in keys and keys[attribute.full_name] != key:
                    raise CheckpointError(
                        f"--source={path} has two variables named {attribute.full_name} "
                        f"({keys[attribute.full_name]} and {key}); expected unique names.")
                variables[attribute.full_name] = listed[key]
                keys[attribute.full_name] = key
    step = None
    for candidate in ("global_step/.ATTRIBUTES/VARIABLE_VALUE",
                      "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"):
        step = _step(reader, candidate) if step is None else step
    return Source(path=path, kind=kind, prefix=prefix, variables=variables, keys=keys,
                  slots=slots, step=step)


def _graphs(path):
    """The GraphDefs of a .meta file (one) or of a TF1 saved_model.pb (one per tag set)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    if path.endswith(SAVED_MODEL_FILE):
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString(data)
        return [meta.graph_def for meta in saved.meta_graphs]
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(data)
    return [meta.graph_def]


def classifier_input_op(meta_graph, matmul_name):
    """The op feeding `matmul_name` in a TF1 .meta graph (or the first graph of a TF1
    hub module that has it), through Identity ops, and whether a StopGradient lies
    on the way: (op name, stopped), or None if absent."""
    nodes = {}
    for graph in _graphs(meta_graph):
        nodes = {node.name: node for node in graph.node}
        if matmul_name in nodes:
            break
    if matmul_name not in nodes:
        return None
    name, stopped = nodes[matmul_name].input[0], False
    while True:
        name = name.lstrip("^").split(":")[0]
        node = nodes.get(name)
        if node is None or node.op not in ("Identity", "StopGradient"):
            return name, stopped
        stopped = stopped or node.op == "StopGradient"
        name = node.input[0]
