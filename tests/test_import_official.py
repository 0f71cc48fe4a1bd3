"""tf_simclr.import_official: released SimCLR checkpoints -> model_dirs.

Fast tests use TF1-style checkpoints written here (tf.raw_ops.SaveV2 with official
names); the parity tests (test_official_*) use checkpoints that the official code
writes in a child process (tests/children/official_checkpoint.py) and compare the
import's outputs with the official model's.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from hub_export import exporter, variants
from testutil import random_source, run_child, tiny_config, train
from tf_simclr import config as config_lib
from tf_simclr.errors import CheckpointError, ConfigError, StorageError
from tf_simclr.import_official import architecture, importer, mapping
from tf_simclr.models import simclr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = os.path.join(os.path.dirname(REPO), "shared", "official_simclr")


def _small_model(seed=0, num_classes=10, depth=18, sk_ratio=0.0, image_size=16):
    config = config_lib.Config().replace(
        resnet_depth=depth, width_multiplier=0.125, sk_ratio=sk_ratio, image_size=image_size,
        num_proj_layers=2, proj_out_dim=16, lineareval_while_pretraining=bool(num_classes),
        global_bn=False, model_dir="/unused")
    tf.keras.utils.set_random_seed(seed)
    model = simclr.build_model(config, num_classes)
    rng = np.random.default_rng(seed)
    for variable in model.variables:  # non-trivial statistics and gammas
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 1.5, variable.shape))
        elif "moving_mean" in variable.path or "gamma" in variable.path:
            variable.assign(rng.normal(0.3, 0.2, variable.shape))
    return model


def official_names(model, scope=""):
    """{TF1 graph name: value} of a tf_simclr model in the official naming scheme."""
    convs, bns = mapping.encoder_layers(model.encoder)
    values = {}
    for index, layer in enumerate(convs):
        suffix = f"_{index}" if index else ""
        values[f"{scope}base_model/conv2d{suffix}/kernel"] = layer.kernel.numpy()
    for index, layer in enumerate(bns):
        suffix = f"_{index}" if index else ""
        for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
            values[f"{scope}base_model/batch_normalization{suffix}/{attr}"] = getattr(
                layer, attr).numpy()
    for index, layer in enumerate(model.projection_head.linear_layers):
        values[f"{scope}head_contrastive/nl_{index}/dense/kernel"] = layer.dense.kernel.numpy()
        for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
            variable = getattr(layer.bn, attr)
            if variable is not None:
                values[f"{scope}head_contrastive/nl_{index}/batch_normalization/{attr}"] = \
                    variable.numpy()
    if model.supervised_head is not None and not scope:
        dense = model.supervised_head.dense
        values["head_supervised/linear_layer/dense/kernel"] = dense.kernel.numpy()
        values["head_supervised/linear_layer/dense/bias"] = dense.bias.numpy()
    return values


def write_tf1(prefix, values):
    """A TF1 name-based checkpoint (prefix.index + data) of {name: array}."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    return prefix


def _outputs(model, images):
    return {k: v.numpy() for k, v in model(images, training=False).items()}


def _images(size=16, count=3):
    return tf.random.stateless_uniform([count, size, size, 3], seed=[7, 1])


def _import(tmp_path, source, name="out", **options):
    return importer.import_official(importer.ImportOptions(
        source=str(source), model_dir=str(tmp_path / name), **options))


@pytest.fixture(scope="module")
def tf1_source(tmp_path_factory):
    """A small TF1-named checkpoint with the extras of the releases: Momentum slots,
    global_step, an EMA copy (other values) and a memory bank."""
    root = tmp_path_factory.mktemp("tf1")
    online, ema = _small_model(0), _small_model(1)
    values = official_names(online)
    values.update(official_names(ema, scope="ema_model/"))
    for name in list(values)[:7]:
        values[name + "/Momentum"] = np.zeros_like(values[name])
    values["global_step"] = np.int64(4321)
    values["memory"] = np.zeros([4, 16], np.float32)
    write_tf1(str(root / "model.ckpt-4321"), values)
    with open(root / "checkpoint", "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-4321"\n')
    return root, online, ema, values


def test_layer_counts_are_the_released_architectures():
    # checkpoint_import.md §2a: counted from graph-only manifests of every release.
    assert architecture.layer_counts(50, False, False) == (53, 53)
    assert architecture.layer_counts(101, False, False) == (104, 104)
    assert architecture.layer_counts(152, False, False) == (155, 155)
    assert architecture.layer_counts(50, True, True) == (87, 71)
    assert architecture.layer_counts(101, True, True) == (172, 139)
    assert architecture.layer_counts(152, True, True) == (257, 207)


def test_tf1_checkpoint_imports_with_the_same_outputs_and_a_full_report(tf1_source, tmp_path):
    root, online, _, values = tf1_source
    report = _import(tmp_path, root, image_size=16)
    assert report["source_kind"] == "tf1_checkpoint"
    assert report["variant"] == "r18_0.125x_sk0"
    assert report["source_step"] == 4321
    # Every variable of the model assigned exactly once, from a distinct source name.
    model, config, path = exporter.model_from_checkpoint(str(tmp_path / "out"))
    assert len(report["mapped"]) == len(model.variables)
    assert len({m[0] for m in report["mapped"]}) == len(report["mapped"])
    assert report["freshly_initialised"] == []
    assert path.endswith("ckpt-4321")
    skipped = report["skipped"]
    assert len(skipped["optimizer state"]) == 7
    assert skipped["step counter"] == ["global_step"]
    assert skipped["memory bank"] == ["memory"]
    assert len(skipped["EMA weights (--weights=ema imports them)"]) == sum(
        n.startswith("ema_model/") for n in values)
    images = _images()
    ours, theirs = _outputs(model, images), _outputs(online, images)
    for key in ("final_avg_pool", "proj_head_output", "logits_sup"):
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert config.model.ft_proj_selector == 0 and config.data.image_size == 16


def test_ema_weights_import_the_ema_copy(tf1_source, tmp_path):
    root, online, ema, _ = tf1_source
    _import(tmp_path, root, image_size=16, weights="ema")
    model, _, _ = exporter.model_from_checkpoint(str(tmp_path / "out"))
    images = _images()
    ours = _outputs(model, images)
    np.testing.assert_array_equal(ours["final_avg_pool"], _outputs(ema, images)["final_avg_pool"])
    # The supervised head is trained online only; the EMA branch has none.
    np.testing.assert_array_equal(model.supervised_head.dense.kernel.numpy(),
                                  online.supervised_head.dense.kernel.numpy())


def test_source_without_projection_head_initialises_it_freshly(tmp_path):
    model = _small_model(0, num_classes=0)
    values = {k: v for k, v in official_names(model).items()
              if not k.startswith("head_contrastive/")}
    write_tf1(str(tmp_path / "v1" / "model.ckpt-1"), values)
    report = _import(tmp_path, tmp_path / "v1" / "model.ckpt-1", image_size=16)
    head = [p for p in report["freshly_initialised"] if "/projection_head/" in p]
    assert head and head == report["freshly_initialised"]
    assert "freshly initialised" in report["notes"][0]


def test_untrained_batch_norm_statistics_are_reported(tmp_path):
    values = official_names(_small_model(0))
    values["head_contrastive/nl_0/batch_normalization/moving_mean"] *= 0
    values["head_contrastive/nl_0/batch_normalization/moving_variance"] = np.ones_like(
        values["head_contrastive/nl_0/batch_normalization/moving_variance"])
    write_tf1(str(tmp_path / "src" / "model.ckpt-1"), values)
    report = _import(tmp_path, tmp_path / "src" / "model.ckpt-1", image_size=16)
    assert report["untrained_batch_norms"] == ["head_contrastive/nl_0/batch_normalization"]


def _hub_module_graph(path, classifier_input):
    """A TF1 hub module's saved_model.pb whose classifier reads `classifier_input`."""
    from tensorflow.core.protobuf import saved_model_pb2
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 8], name="images")
        hidden = tf.identity(images, name="base_model/final_avg_pool")
        if classifier_input == "head_contrastive/Relu":
            hidden = tf.nn.relu(hidden, name="head_contrastive/Relu")
        tf.linalg.matmul(hidden, tf.zeros([8, 10]),
                         name="head_supervised/linear_layer/dense/MatMul")
    saved = saved_model_pb2.SavedModel()
    saved.meta_graphs.add().graph_def.CopyFrom(graph.as_graph_def())
    with open(path, "wb") as f:
        f.write(saved.SerializeToString())


def test_tf1_hub_module_reads_its_variables_and_its_classifier_input(tf1_source, tmp_path):
    _, online, _, values = tf1_source
    hub = tmp_path / "finetuned_hub"
    online_values = {k: v for k, v in values.items() if not k.startswith("ema_model/")}
    write_tf1(str(hub / "variables" / "variables"), online_values)
    (hub / "tfhub_module.pb").write_bytes(b"")
    _hub_module_graph(str(hub / "saved_model.pb"), "head_contrastive/Relu")
    report = _import(tmp_path, hub, image_size=16)
    assert report["source_kind"] == "tf1_hub_module"
    assert (report["ft_proj_selector"], report["train_mode"]) == (1, "finetune")
    model, _, _ = exporter.model_from_checkpoint(str(tmp_path / "out"))
    images = _images()
    hiddens = online.projection_head(online.encoder(images, training=False)["final_avg_pool"],
                                     training=False)
    np.testing.assert_allclose(_outputs(model, images)["logits_sup"],
                               online.supervised_head(hiddens[1]).numpy(), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("change, error, message", [
    ("not_a_checkpoint", CheckpointError, r"is not a checkpoint prefix \(no .*\.index\)"),
    ("zip", CheckpointError, r"is a zip archive; expected it unpacked"),
    ("empty_folder", CheckpointError, r"is a folder without a checkpoint, SavedModel"),
    ("other_scopes", CheckpointError, r"neither SimCLR model variables nor known extras.*"
                                      r"encoder/w"),
    ("no_simclr", CheckpointError, r"has no SimCLR scopes .*found: \['dense', 'encoder'\]\)"),
    ("no_encoder", CheckpointError, r"has no encoder variables .*scopes found: "
                                    r"\['head_contrastive', 'head_supervised'\]"),
    ("counts", CheckpointError, r"20 convolutions / 21 BatchNorms in the encoder of .* match "
                                r"no official ResNet"),
    ("shape", CheckpointError, r"base_model/conv2d_5/kernel is \[3, 3, 8, 9\]; "
                               r".*block_group1/block2/conv2/kernel needs \[3, 3, 8, 8\]"),
    ("ema", CheckpointError, r"--weights=ema but .* has no ema_model/"),
    ("variant", CheckpointError, r"--variant=r50_1x_sk1 but .* is r18_0.125x_sk0 "
                                 r"\(stem kernel \[3, 3, 3, 8\]\)"),
    ("image_size", ConfigError, r"--image_size=224 selects the ImageNet stem but .* has the "
                                r"CIFAR stem \[3, 3, 3, 8\]; expected --image_size <= 32"),
    ("finetuned_path", CheckpointError, r"is fine-tuned but its classifier input cannot be "
                                        r"decided \(no .meta graph\); expected "
                                        r"--ft_proj_selector"),
    ("model_dir", StorageError, r"--model_dir=.* exists and is not empty"),
])
def test_bad_sources_get_one_clear_error(tmp_path, change, error, message):
    values = official_names(_small_model(0))
    options = dict(image_size=16)
    folder = tmp_path / ("finetuned_source" if change == "finetuned_path" else "source")
    if change == "other_scopes":
        values["encoder/w"] = np.zeros(3, np.float32)
    elif change == "no_simclr":
        values = {"encoder/w": np.zeros(3, np.float32), "dense/kernel": np.ones(2, np.float32)}
    elif change == "no_encoder":
        values = {k: v for k, v in values.items() if not k.startswith("base_model/")}
    elif change == "counts":
        del values["base_model/conv2d_20/kernel"]
    elif change == "shape":
        values["base_model/conv2d_5/kernel"] = np.zeros([3, 3, 8, 9], np.float32)
    elif change == "ema":
        options["weights"] = "ema"
    elif change == "variant":
        options["variant"] = variants.parse("r50_1x_sk1")
    elif change == "image_size":
        options["image_size"] = 224
    elif change == "model_dir":
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "file").write_text("x")
    source = write_tf1(str(folder / "model.ckpt-1"), values)
    if change == "not_a_checkpoint":
        source = str(folder / "model.ckpt-2")
    elif change == "zip":
        source = str(tmp_path / "ResNet50_1x.zip")
    elif change == "empty_folder":
        source = str(tmp_path)
    with pytest.raises(error, match=message):
        _import(tmp_path, source, **options)


def test_command_line_error_is_one_line_with_exit_status_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tf_simclr.import_official", f"--source={tmp_path}/nothing",
         f"--model_dir={tmp_path}/out"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is not a checkpoint prefix" in errors[0]
    assert not os.path.exists(tmp_path / "out")


def test_import_writes_a_model_dir_the_exporter_takes(tf1_source, tmp_path):
    root, online, _, _ = tf1_source
    _import(tmp_path, root, image_size=16)
    module = exporter.export_from_checkpoint(str(tmp_path / "out"), str(tmp_path / "hub"))
    loaded = tf.saved_model.load(module)
    images = _images()
    np.testing.assert_allclose(loaded(images).numpy(),
                               _outputs(online, images)["final_avg_pool"], rtol=1e-5,
                               atol=1e-5)
    with open(tmp_path / "out" / importer.REPORT_FILENAME) as f:
        assert json.load(f)["variant"] == "r18_0.125x_sk0"


# Parity with checkpoints the official code writes --------------------------------

OFFICIAL_MISSING = f"the official SimCLR code is not at {OFFICIAL} (parity tests need it)"
needs_official = pytest.mark.skipif(not os.path.isdir(OFFICIAL), reason=OFFICIAL_MISSING)
# Relative to the largest output of the official model (float32 sums over 2048+ terms).
PARITY_RTOL = 1e-4


def _official_checkpoint(root, name, fmt, image_size, *flags):
    """Runs the official code in a child process; returns (folder, images, outputs)."""
    folder = root / name
    # Smooth waves of random frequency and phase per image and channel: on uniform
    # noise a random ResNet's deep features are nearly the same for every image.
    rng = np.random.default_rng(3)
    grid = np.arange(image_size) / image_size
    frequency = rng.uniform(1, 6, (3, 1, 1, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, (3, 1, 1, 3))
    images = 0.5 + 0.5 * np.sin(2 * np.pi * (frequency[..., 0] * grid[None, :, None, None]
                                             + frequency[..., 1] * grid[None, None, :, None])
                                + phase)
    np.save(root / f"{name}_images.npy", images.astype(np.float32))
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "children", "official_checkpoint.py"),
         f"--official={OFFICIAL}", f"--format={fmt}", f"--out={folder}",
         f"--images={root / f'{name}_images.npy'}", f"--image_size={image_size}",
         "--num_classes=10", *flags], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = dict(np.load(folder / "outputs.npz"))
    return folder, images.astype(np.float32), outputs


def _assert_parity(model_dir, images, reference, keys, prefix=""):
    model, config, _ = exporter.model_from_checkpoint(str(model_dir))
    ours = _outputs(model, tf.constant(images))
    for key in keys:
        expected = reference[prefix + key]
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(ours[key], expected, rtol=0, atol=PARITY_RTOL * scale,
                                   err_msg=key)
    return model, config


@needs_official
def test_official_tf1_sk_finetuned_checkpoint_with_ema_and_slots(tmp_path):
    # R50 SK (ResNet-D stem, selective kernels), fine-tuned from the first projection
    # layer as the released 1%/10% models; EMA copy and Momentum slots as released.
    folder, images, reference = _official_checkpoint(
        tmp_path, "tf1_sk1_ft", "tf1", 64, "--depth=50", "--sk_ratio=0.0625", "--finetune",
        "--ft_proj_selector=1", "--ema", "--momentum")
    report = _import(tmp_path, folder, image_size=64)
    assert report["variant"] == "r50_1x_sk1"
    assert report["ft_proj_selector"] == 1 and report["train_mode"] == "finetune"
    assert "head_contrastive/Relu" in report["classifier_input_decided_by"]
    assert report["skipped"]["optimizer state"]
    _assert_parity(tmp_path / "out", images, reference,
                   ("block_group1", "block_group4", "final_avg_pool", "logits_sup"))
    _import(tmp_path, folder, name="ema", image_size=64, weights="ema")
    _assert_parity(tmp_path / "ema", images, reference, ("final_avg_pool",), prefix="ema_")
    # The import is a --teacher for --train_mode=distill as it is.
    from tf_simclr.train import teacher
    official_teacher = teacher.Teacher(str(tmp_path / "out"), 10, 64,
                                       tf.distribute.get_strategy())
    expected = reference["logits_sup"]
    np.testing.assert_allclose(official_teacher.logits(tf.constant(images)).numpy(), expected,
                               rtol=0, atol=PARITY_RTOL * np.max(np.abs(expected)))


@needs_official
def test_official_tf1_checkpoint_at_an_odd_size(tmp_path):
    # 65 px: fixed padding and the SAME max-pool at odd sizes; pretraining graph (the
    # linear head reads the encoder through a StopGradient).
    folder, images, reference = _official_checkpoint(tmp_path, "tf1_sk0", "tf1", 65,
                                                     "--depth=50")
    report = _import(tmp_path, folder, image_size=65)
    assert (report["variant"], report["train_mode"], report["ft_proj_selector"]) == (
        "r50_1x_sk0", "pretrain", 0)
    _assert_parity(tmp_path / "out", images, reference,
                   ("initial_max_pool", "final_avg_pool", "proj_head_output", "logits_sup"))


@needs_official
def test_official_tf2_saved_model_is_run_beside_the_import(tmp_path):
    # The released TF2 layout: index-based keys, full names in the object graph; the
    # classifier's input (here the first projection layer) is found by running it.
    folder, images, reference = _official_checkpoint(
        tmp_path, "saved_model", "saved_model", 64, "--depth=50", "--sk_ratio=0.0625",
        "--finetune", "--ft_proj_selector=1")
    report = _import(tmp_path, folder / "saved_model", image_size=64)
    assert report["source_kind"] == "tf2_saved_model"
    assert report["ft_proj_selector"] == 1 and report["train_mode"] == "finetune"
    compared = report["compared_with_source"]
    assert compared["logits_sup"]["ok"] and compared["final_avg_pool"]["ok"]
    _assert_parity(tmp_path / "out", images, reference, ("final_avg_pool", "logits_sup"))


@needs_official
def test_official_tf1_r50_2x_finetuned_on_the_encoder_output(tmp_path):
    # The 2x width, fine-tuned with the classifier on the encoder output
    # (ft_proj_selector=0, as the released 100% models).
    folder, images, reference = _official_checkpoint(
        tmp_path, "tf1_2x_ft", "tf1", 64, "--depth=50", "--width=2", "--finetune",
        "--ft_proj_selector=0")
    report = _import(tmp_path, folder, image_size=64)
    assert (report["variant"], report["train_mode"], report["ft_proj_selector"]) == (
        "r50_2x_sk0", "finetune", 0)
    _, config = _assert_parity(tmp_path / "out", images, reference,
                               ("block_group1", "block_group4", "final_avg_pool", "logits_sup"))
    assert config.model.width_multiplier == 2


@pytest.fixture(scope="module")
def official_r18(tmp_path_factory):
    """ResNet-18 with the CIFAR stem at 32 px in the official tf2/run.py checkpoint
    layout (with optimizer slots), imported: (root, images, official outputs, report)."""
    if not os.path.isdir(OFFICIAL):
        pytest.skip(OFFICIAL_MISSING)
    root = tmp_path_factory.mktemp("official_r18")
    folder, images, reference = _official_checkpoint(root, "tf2_r18", "tf2", 32,
                                                     "--depth=18", "--momentum")
    return root, images, reference, _import(root, folder)


def test_official_tf2_checkpoint_imports_and_exports_for_hub(official_r18, tmp_path):
    root, images, reference, report = official_r18
    assert (report["source_kind"], report["variant"], report["image_size"]) == (
        "tf2_checkpoint", "r18_1x_sk0", 32)
    assert report["skipped"]["optimizer state"]
    _assert_parity(root / "out", images, reference,
                   ("final_avg_pool", "proj_head_output", "logits_sup"))
    module = exporter.export_from_checkpoint(str(root / "out"), str(tmp_path / "hub"))
    scale = np.max(np.abs(reference["final_avg_pool"]))
    features = tf.saved_model.load(module)(tf.constant(images)).numpy()
    np.testing.assert_allclose(features, reference["final_avg_pool"], rtol=0,
                               atol=PARITY_RTOL * scale)
    # hub.KerasLayer(trainable=True) in tf_keras gives the official outputs and
    # takes a gradient step through every weight (tests/children/hub_tf_keras_consumer.py
    # also fine-tunes the module's classifier).
    np.savez(tmp_path / "reference.npz", x_5_32=images,
             final_avg_pool_5_32=reference["final_avg_pool"],
             logits_sup_5_32=reference["logits_sup"])
    tolerance = PARITY_RTOL * max(scale, np.max(np.abs(reference["logits_sup"])))
    hub_report = run_child(tmp_path, "hub_tf_keras_consumer.py", [
        json.dumps({"finetune": (module, str(tmp_path / "reference.npz"), True)}), tolerance])
    loaded = hub_report["finetune"]
    assert loaded["frozen_features_diff"] < tolerance
    assert loaded["classifier_diff"] < tolerance
    assert loaded["features"]["none_grads"] == 0 and loaded["features"]["hub_grad_norm"] > 0
    assert loaded["classifier"]["hub_grad_norm"] > 0


def test_official_tf2_checkpoint_fine_tunes_with_the_training_loop(official_r18, tmp_path):
    # tf_simclr.run's loop (Trainer) fine-tunes the imported official ResNet-18 on
    # labelled images: the training loss falls.
    root = official_r18[0]
    imported = config_lib.load(str(root / "out"))
    config = tiny_config(
        tmp_path / "finetune", train_mode="finetune", checkpoint=str(root / "out"),
        image_size=32, resnet_depth=18, width_multiplier=imported.model.width_multiplier,
        num_proj_layers=imported.model.num_proj_layers,
        proj_out_dim=imported.model.proj_out_dim, optimizer="momentum",
        learning_rate=0.05, weight_decay=0.0, train_batch_size=16, train_steps=12,
        checkpoint_steps=12, steps_per_loop=1)
    _, loop = train(config, random_source(num_train=16, size=32, num_classes=10))
    losses = [metrics["supervised_loss"] for _, metrics in loop.history]
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses  # measured 0.83


def test_fine_tuning_starts_from_the_imported_encoder(tf1_source, tmp_path):
    from testutil import mirrored, tiny_config
    from tf_simclr.train import trainer
    root, online, _, _ = tf1_source
    _import(tmp_path, root, image_size=16)
    config = tiny_config(tmp_path / "finetune", train_mode="finetune",
                         checkpoint=str(tmp_path / "out"), width_multiplier=0.125,
                         zero_init_logits_layer=True)
    state = trainer.TrainState(config, mirrored(1), 5, 64)
    assert state.restore_or_initialize() == 0
    ours = {v.path: v.numpy() for v in state.model.encoder.variables}
    theirs = {v.path: v.numpy() for v in online.encoder.variables}
    assert ours.keys() == theirs.keys()
    for path, value in theirs.items():
        np.testing.assert_array_equal(ours[path], value, err_msg=path)
    assert state.model.supervised_head.dense.kernel.shape[-1] == 5


def test_a_variable_assigned_twice_is_refused():
    model = _small_model(0)
    kernel, other = model.encoder.stem.conv.kernel, model.encoder.stem.bn.gamma
    with pytest.raises(CheckpointError, match=r"would be assigned from both a and b"):
        mapping.check_once([mapping.Pair("a", kernel),
                            mapping.Pair("b", kernel)])
    with pytest.raises(CheckpointError, match=r"a would be assigned to both"):
        mapping.check_once([mapping.Pair("a", kernel),
                            mapping.Pair("a", other)])
