"""Writes a SimCLRModel as a TF-Hub reusable SavedModel (`module.HubModule`).

`export_saved_model(model, config, export_dir)` exports a built model;
`export_from_checkpoint(model_dir, export_dir)` the model of a training run's
config.json with its latest (or a given) checkpoint; `export_variant("r50_1x",
export_dir)` an untrained architecture. What a module offers is described in
module.py. Every export is written into a temporary sibling directory and renamed
into place, so a failure leaves nothing at `export_dir`.
"""

import contextlib
import os
import shutil
import tempfile

import tensorflow as tf

from hub_export import tarball
from hub_export import variants as variants_lib
from hub_export.module import CONFIG_ASSET, SERVING_SIGNATURE, HubModule, local_batch_norm
from tf_simclr import config as config_lib
from tf_simclr.errors import ExportError
from tf_simclr.models import simclr as model_lib
from tf_simclr.train import checkpointing

# Writing ------------------------------------------------------------------------

def _tracing_for_save():
    """A context in which tf.functions trace as tf.saved_model.save will look them up.

    save() re-traces every function traced outside its own context (the variable
    policy is part of the cache key), which triples the export time of a ResNet-50.
    Tracing under the same (private) save context lets save() reuse the traces. If
    that API moves, exports stay correct, only slower.
    """
    try:
        from tensorflow.python.saved_model import save_context  # pylint: disable=g-direct-tensorflow-import
        return save_context.save_context(tf.saved_model.SaveOptions())
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


def _prepare_destination(export_dir, overwrite):
    export_dir = os.path.abspath(export_dir)
    if os.path.lexists(export_dir) and not overwrite:
        raise ExportError(f"export_dir {export_dir} already exists; expected a new path "
                          "(or --overwrite to replace it).")
    parent = os.path.dirname(export_dir)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise ExportError(f"export_dir {export_dir}: its parent {parent} is not a directory.")
    os.makedirs(parent, exist_ok=True)
    return export_dir


def _move_into_place(tmp_dir, export_dir):
    """Renames tmp_dir to export_dir, replacing an existing one only after success."""
    old = None
    if os.path.lexists(export_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.old-",
                               dir=os.path.dirname(export_dir))
        os.rmdir(old)
        os.replace(export_dir, old)
    try:
        os.replace(tmp_dir, export_dir)
    except BaseException:
        if old is not None:
            os.replace(old, export_dir)
        raise
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


def export_saved_model(model, config, export_dir, overwrite=False, tar_gz=False):
    """Writes `model` as a TF-Hub reusable SavedModel to `export_dir`; returns its path.

    Args:
        model: a built `tf_simclr.models.simclr.SimCLRModel` (possibly created under a
            tf.distribute strategy; its variables are saved as plain ones).
        config: the `tf_simclr.config.Config` it was built from; stored in the module
            (assets/config.json and `config_json`) and the source of weight_decay.
        export_dir: the module directory to create; its parent is created if needed.
        overwrite: replace an existing export_dir (only once the new one is complete).
        tar_gz: also write export_dir + ".tar.gz" in TF-Hub's compressed format
            (see `tarball.pack_tar_gz`).

    Returns:
        The absolute path of the module directory.

    Raises:
        ExportError: export_dir exists and overwrite is False, or the model is not built.
    """
    if not model.built:
        raise ExportError("export_saved_model needs a built model (build_model builds it).")
    export_dir = _prepare_destination(export_dir, overwrite)
    if tar_gz and os.path.lexists(export_dir + ".tar.gz") and not overwrite:
        raise ExportError(f"{export_dir}.tar.gz already exists; expected a new path "
                          "(or --overwrite to replace it).")
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-",
                               dir=os.path.dirname(export_dir))
    try:
        config_path = os.path.join(tmp_dir, CONFIG_ASSET)
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(config.to_json())
        module_dir = os.path.join(tmp_dir, "module")
        with local_batch_norm(model):
            with _tracing_for_save():
                module = HubModule(model, config)
                module.trace()
            module.config_file = tf.saved_model.Asset(config_path)
            tf.saved_model.save(module, module_dir,
                                signatures={SERVING_SIGNATURE: module.serve})
        for name in os.listdir(module_dir):
            os.replace(os.path.join(module_dir, name), os.path.join(tmp_dir, name))
        os.rmdir(module_dir)
        os.remove(config_path)
        if tar_gz:  # before the module moves, so a failure leaves neither
            tarball.pack_tar_gz(tmp_dir, export_dir + ".tar.gz", overwrite=overwrite)
        _move_into_place(tmp_dir, export_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return export_dir


# Sources: a model_dir checkpoint or a named architecture -------------------------

def load_config(model_dir):
    """config.json of model_dir as a Config; ExportError if missing or unreadable."""
    try:
        return config_lib.load(model_dir)
    except config_lib.ConfigError as error:
        raise ExportError(str(error)) from None


def model_from_checkpoint(model_dir, checkpoint=None, config=None):
    """(model, config, checkpoint path): the model of model_dir/config.json with the
    weights of its latest (or the given) checkpoint.

    The number of classes comes from the checkpoint's supervised head (0 if it has
    none). Every variable of the model must be in the checkpoint; the optimizer's
    may be missing or present.
    """
    config = load_config(model_dir) if config is None else config
    path = checkpointing.resolve(checkpoint or model_dir,
                                 "--checkpoint" if checkpoint else "--model_dir")
    num_classes = checkpointing.num_classes_in_checkpoint(path)
    try:
        model = model_lib.build_model(config, num_classes)
    except ValueError as error:
        raise ExportError(f"cannot build the model of {model_dir}/config.json with "
                          f"{num_classes} classes from {path}: {error}") from None
    checkpointing.restore(path, f"variable of the model of {model_dir}/config.json",
                          model=model)
    return model, config, path


def model_from_variant(variant, image_size=224, base_config=None):
    """(model, config): a randomly initialised model of a variant name or Variant.

    The config is `base_config` (default Config(): pretraining heads, no classifier)
    with the variant's depth, width and SK ratio and `image_size` (<= 32 selects the
    CIFAR stem, as in training).
    """
    if isinstance(variant, str):
        variant = variants_lib.parse(variant)
    config = variant.config(image_size=image_size, base=base_config)
    try:
        config.model.validate()
        config.data.validate()
    except config_lib.ConfigError as error:
        raise ExportError(str(error)) from None
    return model_lib.build_model(config, 0), config


def export_from_checkpoint(model_dir, export_dir, checkpoint=None, overwrite=False,
                           tar_gz=False):
    """Rebuilds the model of model_dir from its checkpoint and exports it; returns
    the module path."""
    model, config, _ = model_from_checkpoint(model_dir, checkpoint)
    return export_saved_model(model, config, export_dir, overwrite=overwrite, tar_gz=tar_gz)


def export_variant(variant, export_dir, image_size=224, overwrite=False, tar_gz=False):
    """Exports an untrained (random) model of a variant; returns the module path."""
    model, config = model_from_variant(variant, image_size=image_size)
    return export_saved_model(model, config, export_dir, overwrite=overwrite, tar_gz=tar_gz)
