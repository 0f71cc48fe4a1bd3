"""hub_export: modules load and fine-tune in processes other than the exporter.

The exporter runs in this process (through the CLI's main or export_saved_model);
every load runs in a child Python process: a Keras 3 one (tf.saved_model.load and
keras.layers.TFSMLayer) and a tf_keras one (hub.KerasLayer with
TF_USE_LEGACY_KERAS=1). Each child compares with reference outputs that this
process computes with the Keras model, and reports as JSON.
"""

import contextlib
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from hub_export import __main__ as cli
from hub_export import exporter, variants
from testutil import cpu_devices, finish_child, run_child, start_child
from tf_simclr import config as config_lib
from tf_simclr.models import simclr as model_lib
from tf_simclr.train import checkpointing

NUM_CLASSES = 5
BATCH_SIZES = (2, 5)
IMAGE_SIZES = (32, 48)
ENDPOINTS = ("initial_conv", "initial_max_pool", "block_group1", "block_group2",
             "block_group3", "block_group4", "final_avg_pool", "proj_head_input")
TOLERANCE = 2e-5  # float32; outputs are O(1)


def _tiny_config(model_dir, **changes):
    return config_lib.Config().replace(
        resnet_depth=18, width_multiplier=0.125, image_size=32, model_dir=str(model_dir),
        **changes)


def _images(batch, size, seed):
    return np.random.default_rng(seed).random((batch, size, size, 3), dtype=np.float32)


def _save_checkpoint(model, model_dir):
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=keras.optimizers.SGD()), str(model_dir), 3)
    return manager.save()


def _make_run(model_dir, num_classes, strategy=None, **changes):
    """A model_dir as training leaves it: config.json and a checkpoint whose BatchNorm
    moving statistics have moved (one forward pass with training=True)."""
    cfg = _tiny_config(model_dir, **changes)
    config_lib.save(cfg, str(model_dir))
    def scope():
        return strategy.scope() if strategy else contextlib.nullcontext()

    with scope():
        model = model_lib.build_model(cfg, num_classes)
    images = tf.constant(_images(8, 32, seed=0))
    if strategy:
        strategy.run(tf.function(lambda: model(images, training=True)))
    else:
        model(images, training=True)
    with scope():
        _save_checkpoint(model, model_dir)
    return cfg, model


def _reference(model, path):
    """Keras outputs (training=False) for every batch size and image size -> npz."""
    arrays = {}
    for batch in BATCH_SIZES:
        for size in IMAGE_SIZES:
            x = _images(batch, size, seed=batch * 100 + size)
            arrays[f"x_{batch}_{size}"] = x
            for name, value in model(x, training=False).items():
                arrays[f"{name}_{batch}_{size}"] = np.asarray(value, np.float32)
    np.savez(path, **arrays)
    return str(path)


# Fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Three trained-looking runs (pretrain, finetune, pretrain under a 2-replica
    MirroredStrategy), each exported through the CLI, plus the mirrored model
    exported directly as the training job does; reference outputs for each."""
    root = tmp_path_factory.mktemp("hub_export")
    runs = {}
    _, _ = _make_run(root / "pretrain", 0)
    _, _ = _make_run(root / "finetune", NUM_CLASSES, train_mode="finetune",
                     finetune_from_scratch=True)
    strategy = tf.distribute.MirroredStrategy(cpu_devices(2))
    mirrored_cfg, mirrored_model = _make_run(root / "mirrored", NUM_CLASSES, strategy=strategy)
    for name in ("pretrain", "finetune", "mirrored"):
        export_dir = root / "out" / name
        argv = ["hub_export", f"--model_dir={root / name}", f"--export_dir={export_dir}"]
        if name == "pretrain":
            argv.append("--tar_gz")
        assert cli.main(argv) == 0
        model, _, _ = exporter.model_from_checkpoint(str(root / name))
        runs[name] = (str(export_dir), _reference(model, root / f"ref_{name}.npz"))
    # The job's route: export_saved_model on the live distributed model.
    job_dir = exporter.export_saved_model(mirrored_model, mirrored_cfg,
                                          str(root / "out" / "mirrored_live"))
    runs["mirrored_live"] = (job_dir, _reference(mirrored_model, root / "ref_mirrored_live.npz"))
    return root, runs


@pytest.fixture(scope="module")
def children(exports, tmp_path_factory):
    """The Keras 3 and the tf_keras consumer, run at the same time."""
    root, runs = exports
    tmp = tmp_path_factory.mktemp("children")
    # TensorFlow's warnings on (level 1) so the test sees any the module causes.
    keras3 = start_child(tmp, "hub_keras3_consumer.py", [json.dumps(runs), TOLERANCE],
                         env_extra={"TF_CPP_MIN_LOG_LEVEL": "1"})
    modules = {name: (path, ref, name != "pretrain") for name, (path, ref) in runs.items()
               if name in ("pretrain", "finetune", "mirrored")}
    tar = os.path.join(root, "out", "pretrain.tar.gz")
    tf_keras = start_child(
        tmp, "hub_tf_keras_consumer.py", [json.dumps(modules), TOLERANCE],
        env_extra={"HUB_TARBALL": tar, "HUB_TARBALL_REF": runs["pretrain"][1],
                   "TFHUB_CACHE_DIR": str(root / "hub_cache"),
                   "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                   "http_proxy": "", "HTTP_PROXY": ""})
    try:
        keras3_result = finish_child(keras3)
    except BaseException:
        tf_keras[1].kill()
        tf_keras[1].communicate()
        raise
    return {"keras3": keras3_result, "tf_keras": finish_child(tf_keras)}


@pytest.fixture(scope="module")
def keras3_report(children):
    return children["keras3"]


@pytest.fixture(scope="module")
def tf_keras_report(children):
    return children["tf_keras"]


# Keras 3 / tf.saved_model.load ------------------------------------------------------

@pytest.mark.parametrize("name", ["pretrain", "finetune", "mirrored", "mirrored_live"])
def test_outputs_equal_keras_model_at_two_batch_and_image_sizes(keras3_report, name):
    r = keras3_report[name]
    assert len(r["diffs"]) == len(BATCH_SIZES) * len(IMAGE_SIZES)
    for suffix, diffs in r["diffs"].items():
        assert diffs.pop("endpoint_keys"), (suffix, r["keys"])
        worst = max(diffs, key=diffs.get)
        assert diffs[worst] < TOLERANCE, (name, suffix, worst, diffs[worst])
    assert set(ENDPOINTS) <= set(r["keys"])
    assert ("logits_sup" in r["keys"]) == (name != "pretrain")
    assert ("proj_head_output" in r["keys"]) == (name != "finetune")
    # [batch, 512 * width] for ResNet-18 (2048 * width for 50+, see the dims tests).
    assert r["shapes"]["5_48"] == [5, 64]
    assert r["feature_dim"] == 64


@pytest.mark.parametrize("name", ["pretrain", "finetune", "mirrored_live"])
def test_module_follows_the_reusable_savedmodel_api(keras3_report, name):
    r = keras3_report[name]
    assert r["attrs"] == {"variables": True, "trainable_variables": True,
                          "regularization_losses": True, "endpoints": True,
                          "call_training": True, "classifier": name != "pretrain"}
    assert r["signatures"] == ["serving_default"]
    assert 0 < r["n_trainable"] < r["n_variables"]  # moving statistics are not trainable
    assert len(r["reg_losses"]) == 1 and r["reg_losses"][0] > 0
    assert r["num_classes"] == (0 if name == "pretrain" else NUM_CLASSES)
    if name == "finetune":  # encoder + linear head (the projection layers are unused)
        assert r["classifier_trainable"] == r["n_trainable"] + 2
    elif name == "mirrored_live":  # the online linear head, behind a stop_gradient
        assert r["classifier_trainable"] == 2
    assert r["config_json"] == r["asset_config"]
    assert r["config_json"]["model"]["resnet_depth"] == 18
    assert r["config_json"]["train"]["train_mode"] == (
        "finetune" if name == "finetune" else "pretrain")


def test_tfsm_layer_updates_batch_norm_only_in_training(keras3_report):
    r = keras3_report["pretrain"]
    assert r["tfsm_trainable_weights"] > 0 and r["tfsm_moving"] > 0
    assert r["tfsm_bn_changed_inference"] == 0
    assert r["tfsm_bn_changed_training"] == r["tfsm_moving"]


@pytest.mark.parametrize("bad", ["uint8", "float64", "rank3", "channels1", "channels4"])
def test_wrong_inputs_fail_with_a_clear_error(keras3_report, bad):
    errors = keras3_report["pretrain"]["errors"][bad]
    for entry in ("call", "call_training", "endpoints"):
        kind, message = errors[entry]
        assert kind == "InvalidArgumentError", (entry, kind, message)
        assert "expected images as float32 [batch, height, width, 3]" in message, message
        if bad in ("uint8", "float64"):
            assert f"received dtype {bad}" in message, message
        else:
            assert "received float32 with shape" in message, message
    # The signature (and TFSMLayer, which calls it) is float32-only by definition:
    # TensorFlow rejects other dtypes before the graph runs; shapes hit our check.
    # Keras 3 casts floating inputs to a layer's dtype, so TFSMLayer takes float64.
    for entry in ("signature", "tfsm"):
        if entry == "tfsm" and bad == "float64":
            assert errors[entry] is None
            continue
        assert errors[entry] is not None, entry
        kind, message = errors[entry]
        assert kind == "InvalidArgumentError", (entry, kind, message)
        if bad in ("uint8", "float64"):
            assert "float" in message, message
        else:
            assert "expected images as float32 [batch, height, width, 3]" in message, message


def test_loading_and_running_print_no_warnings(keras3_report, tf_keras_report):
    # Official SimCLR SavedModels print "Importing a function ... with ops with
    # unsaved custom gradients" per BatchNorm (#108/#193); Grappler warns about
    # control edges into lowered conds.
    for report in (keras3_report, tf_keras_report):
        assert "custom gradient" not in report["_stderr"], report["_stderr"][-2000:]
    assert "loop optimization" not in keras3_report["_stderr"], keras3_report["_stderr"][-2000:]


# hub.KerasLayer (tf_keras) ----------------------------------------------------------

@pytest.mark.parametrize("name", ["pretrain", "finetune", "mirrored"])
def test_hub_keras_layer_fine_tunes_the_encoder(tf_keras_report, name):
    r = tf_keras_report[name]["features"]
    assert r["output_shape"] == [None, 64]
    assert r["hub_trainable"] > 0 and r["hub_non_trainable"] > 0
    assert r["model_losses"] == 1  # the module's weight decay
    assert r["none_grads"] == 0
    assert r["hub_grads"] == r["hub_trainable"] and r["hub_grad_norm"] > 0
    # Every weight moves except the first BatchNorm of each residual branch: the
    # branch's last BN starts with gamma = 0, so the BN before it gets no gradient
    # in the first step (its conv kernels still move through the weight decay).
    unchanged = r["hub_unchanged"]
    assert all("/bn1/" in n and n.endswith(("gamma:0", "beta:0")) for n in unchanged), unchanged
    assert len(unchanged) <= r["hub_trainable"] // 3
    assert r["bn_changed_inference"] == 0
    assert r["bn_changed_training"] > 0
    assert np.isfinite(r["loss"])
    if name == "pretrain":
        assert np.isfinite(r["fit_loss"])
    frozen = tf_keras_report[name]
    assert frozen["frozen_trainable"] == 0 and frozen["frozen_features_diff"] < TOLERANCE


@pytest.mark.parametrize("name", ["finetune", "mirrored"])
def test_hub_keras_layer_gives_logits(tf_keras_report, name):
    r = tf_keras_report[name]
    assert r["signature_logits_diff"] < TOLERANCE
    assert r["classifier_diff"] < TOLERANCE
    if name != "finetune":
        return
    step = r["classifier"]
    assert step["output_shape"] == [None, NUM_CLASSES]
    assert step["none_grads"] == 0 and step["hub_grad_norm"] > 0
    assert step["bn_changed_inference"] == 0 and step["bn_changed_training"] > 0


def test_tar_gz_loads_through_hub(tf_keras_report, exports):
    root, _ = exports
    assert os.path.isfile(os.path.join(root, "out", "pretrain.tar.gz"))
    assert tf_keras_report["tarball_http_diff"] < TOLERANCE
    assert tf_keras_report["tarball_local_diff"] < TOLERANCE


# Feature dimensions of the named architectures --------------------------------------

def _export_variants_and_dims(tmp_path, names, image_size=64):
    out = tmp_path / "variants"
    assert cli.main(["hub_export", f"--variants={','.join(names)}", "--init=random",
                     f"--image_size={image_size}", f"--export_dir={out}"]) == 0
    dims = run_child(tmp_path, "hub_feature_dims.py", [out, ",".join(names)])
    dims.pop("_stderr")
    return dims


def test_r50_1x_feature_vector_is_2048(tmp_path):
    dims = _export_variants_and_dims(tmp_path, ["r50_1x"])
    assert dims == {"r50_1x": [2, 2048]}
    # 2048 * width: r50_2x and r50_4x are exported in test_r50_2x_4x_feature_dims
    # (slow: 94M and 375M parameters).
    assert [variants.parse(n).feature_dim for n in ("r50_1x", "r50_2x", "r50_4x")] == [
        2048, 4096, 8192]


@pytest.mark.slow
def test_r50_2x_4x_feature_dims(tmp_path):
    dims = _export_variants_and_dims(tmp_path, ["r50_2x", "r50_4x", "r50_0.25x_sk"])
    assert dims == {"r50_2x": [2, 4096], "r50_4x": [2, 8192], "r50_0.25x_sk": [2, 512]}


# Variant names ----------------------------------------------------------------------

def test_variant_names():
    v = variants.parse("r101_1x_sk")
    assert (v.resnet_depth, v.width_multiplier, v.sk_ratio) == (101, 1.0, 0.0625)
    assert variants.parse("r50_2x_sk0").sk_ratio == 0.0
    assert variants.parse("r18_0.5x").width_multiplier == 0.5
    assert variants.parse("R50_4X").feature_dim == 8192
    cfg = variants.parse("r152_3x_sk1").config(image_size=64)
    assert (cfg.model.resnet_depth, cfg.model.width_multiplier, cfg.data.image_size) == (
        152, 3.0, 64)
    for bad in ("r51_1x", "resnet50", "r50_x", "r50_1x_sk2", "r50_0x", ""):
        with pytest.raises(variants.VariantError, match="expected r{depth}_{width}x"):
            variants.parse(bad)
    with pytest.raises(variants.VariantError, match="twice"):
        variants.parse_list("r50_1x,r50_1x")


# Bad arguments: exit status 2, one line naming the value, nothing written ------------

def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["hub_export"] + argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _leftovers(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_bad_arguments_give_clear_errors(tmp_path, capsys, exports):
    root, _ = exports
    out = tmp_path / "out"
    empty = tmp_path / "empty_run"
    empty.mkdir()
    config_lib.save(_tiny_config(empty), str(empty))
    message = _cli_error(capsys, [f"--model_dir={empty}", f"--export_dir={out}"])
    assert "no checkpoint in" in message and str(empty) in message
    message = _cli_error(capsys, [f"--model_dir={root / 'pretrain'}",
                                  f"--checkpoint={root / 'pretrain' / 'ckpt-99'}",
                                  f"--export_dir={out}"])
    assert "ckpt-99" in message
    message = _cli_error(capsys, ["--variant=r50_3y", "--init=random", f"--export_dir={out}"])
    assert "r50_3y" in message and "r50_1x" in message
    message = _cli_error(capsys, ["--variant=r50_1x", f"--export_dir={out}"])
    assert "--init=random" in message
    message = _cli_error(capsys, [f"--model_dir={tmp_path / 'missing'}", f"--export_dir={out}"])
    assert "missing" in message
    message = _cli_error(capsys, [f"--model_dir={root / 'pretrain'}"])
    assert "--export_dir" in message
    message = _cli_error(capsys, ["--variant=r18_0.125x", "--init=random", "--image_size=8",
                                  f"--export_dir={out}"])
    assert "image_size" in message and "8" in message
    message = _cli_error(capsys, ["--bogus_flag=1"])
    assert "bogus_flag" in message
    existing = root / "out" / "pretrain"
    mtime = os.path.getmtime(existing / "saved_model.pb")
    message = _cli_error(capsys, [f"--model_dir={root / 'pretrain'}", f"--export_dir={existing}"])
    assert "already exists" in message and str(existing) in message
    assert os.path.getmtime(existing / "saved_model.pb") == mtime
    assert _leftovers(tmp_path) == ["empty_run"]


def test_failed_export_leaves_nothing_and_overwrite_replaces(tmp_path, exports, monkeypatch):
    root, runs = exports
    model, cfg, _ = exporter.model_from_checkpoint(str(root / "pretrain"))

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    # Fails while writing: nothing is left at export_dir or beside it.
    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        exporter.export_saved_model(model, cfg, str(tmp_path / "module"), tar_gz=True)
    assert _leftovers(tmp_path) == []
    # An existing module survives a failed --overwrite ...
    shutil.copytree(runs["pretrain"][0], tmp_path / "module")
    (tmp_path / "module" / "marker").write_text("old")
    with pytest.raises(RuntimeError):
        exporter.export_saved_model(model, cfg, str(tmp_path / "module"), overwrite=True)
    assert (tmp_path / "module" / "marker").exists()
    assert _leftovers(tmp_path) == ["module"]
    monkeypatch.undo()
    # ... is kept without it, and replaced by a complete one with it.
    with pytest.raises(exporter.ExportError, match="already exists"):
        exporter.export_saved_model(model, cfg, str(tmp_path / "module"))
    exporter.export_saved_model(model, cfg, str(tmp_path / "module"), overwrite=True)
    assert not (tmp_path / "module" / "marker").exists()
    assert os.path.isfile(tmp_path / "module" / "saved_model.pb")
    assert _leftovers(tmp_path) == ["module"]


def test_num_classes_comes_from_the_checkpoint(exports):
    root, _ = exports
    assert checkpointing.num_classes_in_checkpoint(
        tf.train.latest_checkpoint(str(root / "pretrain"))) == 0
    assert checkpointing.num_classes_in_checkpoint(
        tf.train.latest_checkpoint(str(root / "finetune"))) == NUM_CLASSES
