"""The probe end to end: after pretraining in the job, from the command line on a
model_dir or a hub module, the features it caches, and its one-line errors."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from hub_export.actions import ExportAfterEval
from testutil import mock_tfds
from tf_simclr import config as config_lib
from tf_simclr import data, errors, job
from tf_simclr.probe import __main__ as probe_main
from tf_simclr.probe import feature_store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("red", "green", "blue")
SIZE = 16


def _image_folder(root, per_class=24, size=SIZE, labelled=True):
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        folder = root / name if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.normal(70, 30, (size, size, 3))
            pixels[..., label] += 110
            image = np.clip(pixels, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{name}_{i}.png")
    return root


def _config(model_dir, data_dir, **fields):
    values = dict(
        dataset="image_folder", data_dir=str(data_dir), train_split="train[:75%]",
        eval_split="train[75%:]", image_size=SIZE, resnet_depth=18, width_multiplier=0.0625,
        train_batch_size=8, eval_batch_size=8, train_steps=9, checkpoint_steps=9,
        steps_per_loop=3, optimizer="lars", learning_rate=0.5, warmup_epochs=0.0,
        temperature=0.5, use_blur=False, color_jitter_strength=0.5, num_proj_layers=2,
        proj_out_dim=16, lineareval_while_pretraining=False, mode="train_then_eval",
        keep_hub_module_max=1, probe="baselines", probe_l2_steps=8,
        knn_monitor_epochs=1, knn_monitor_train_examples=40, knn_monitor_eval_examples=12,
        model_dir=str(model_dir))
    values.update(fields)
    return config_lib.Config().replace(**values).validate()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    data_dir = _image_folder(root / "images")
    config = _config(root / "run", data_dir)
    results = job.run(config, after_eval=[ExportAfterEval()])
    return types.SimpleNamespace(root=root, data_dir=data_dir, config=config,
                                 results=results, model_dir=root / "run")


def _values(**fields):
    values = dict(hub_module=None, baseline="none", baselines=False, output_dir=None,
                  neighbours=False, model_dir=None, checkpoint=None)
    values.update(fields)
    return types.SimpleNamespace(**values)


def _store(directory):
    with open(os.path.join(directory, feature_store.MANIFEST)) as f:
        return feature_store.FeatureStore(str(directory), json.load(f))


def test_job_probes_the_encoder_and_both_baselines(pretrained):
    probe = pretrained.results["eval"]["probe"]
    assert sorted(probe) == ["pixels", "random", "simclr"]
    for row in probe.values():
        assert row["num_train_examples"] == 54 and row["num_test_examples"] == 18
        assert 0.0 <= row["linear_top1"] <= row["linear_top5"] <= 1.0
        assert row["l2"] in [entry["l2"] for entry in row["l2_grid"]]
    # Mean colours separate the classes: raw pixels must find them.
    assert probe["pixels"]["linear_top1"] == 1.0
    assert probe["simclr"]["feature_dim"] == 32 and probe["pixels"]["feature_dim"] == 768
    written = json.loads((pretrained.model_dir / "result.json").read_text())
    assert written["eval"]["probe"]["simclr"]["linear_top1"] == probe["simclr"]["linear_top1"]
    table = (pretrained.model_dir / "probe" / "probe_table.md").read_text()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "simclr", "pixels", "random"]
    assert written["eval"]["saved_model"].endswith(os.path.join("saved_model", "9"))


def test_job_draws_neighbours_and_the_learning_curve(pretrained):
    picture = Image.open(pretrained.model_dir / "neighbours.png")
    # 3 query rows (one per class) of 1 + 8 tiles (16 px tiles enlarged 5x + frame).
    tile = 16 * 5 + 2 * 3 + 2
    assert picture.size == (tile * 9 + 8, tile * 3)
    curve = json.loads((pretrained.model_dir / "learning_curve.json").read_text())
    assert [p["step"] for p in curve] == [3, 6, 9]
    assert [p["epoch"] for p in curve] == [3 / 7, 6 / 7, 9 / 7]  # 54 examples / 8 -> 7
    knn_points = [p for p in curve if "knn_top1" in p]
    assert [p["step"] for p in knn_points] == [9]  # one interval (7 steps) ended, at 9
    assert Image.open(pretrained.model_dir / "learning_curve.png").format == "PNG"
    logged = {}
    for path in pretrained.model_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                logged.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    assert logged["eval/knn_top1"] == [(9, pytest.approx(knn_points[0]["knn_top1"]))]
    assert logged["eval/probe_linear_top1"][0][0] == 9


def test_cached_features_equal_the_hub_modules_outputs(pretrained, tmp_path):
    module = pretrained.results["eval"]["saved_model"]
    hub_config = pretrained.config.replace(probe="none", model_dir=None)
    probe_main.run(hub_config, _values(hub_module=module, output_dir=str(tmp_path / "hub")))
    split = "train[:75%]"
    safe = "train__75__"
    ours = _store(pretrained.model_dir / "probe" / "features" / "simclr" / safe)
    hub = _store(tmp_path / "hub" / "features" / "hub_module" / safe)
    np.testing.assert_allclose(hub.features(), ours.features(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(hub.labels, ours.labels)
    # ...and both equal calling the module on the decoded images, in split order.
    source = data.build_source(pretrained.config.data)
    images = np.stack([ex["image"].numpy() for ex in source.examples(split)])
    direct = tf.saved_model.load(module)(tf.constant(images / 255.0, tf.float32))
    np.testing.assert_allclose(ours.features(), direct.numpy(), rtol=1e-5, atol=1e-5)


def test_probe_of_the_model_dir_reuses_nothing_and_agrees(pretrained, tmp_path):
    config = pretrained.config.replace(probe="none")
    result = probe_main.run(config, _values(model_dir=str(pretrained.model_dir),
                                            output_dir=str(tmp_path / "cli"),
                                            neighbours=True))
    from_job = pretrained.results["eval"]["probe"]["simclr"]
    assert result["linear_top1"] == from_job["linear_top1"]
    assert result["knn_top1"] == from_job["knn_top1"]
    assert result["source"].startswith("checkpoint ")
    assert (tmp_path / "cli" / "neighbours.png").exists()


def test_label_fraction_probes_and_caches_its_own_stratified_subset(pretrained, tmp_path):
    config = pretrained.config.replace(probe="none")
    output = str(tmp_path / "pixels")
    whole = probe_main.run(config, _values(baseline="pixels", output_dir=output))
    subset_config = config.replace(label_fraction=0.5)
    subset = probe_main.run(subset_config, _values(baseline="pixels", output_dir=output))
    features = tmp_path / "pixels" / "features" / "pixels"
    full = _store(features / "train__75__")
    ours = _store(features / "train__75___label_fraction=0.5,seed=0")
    # Half of each class, rounded half up.
    per_class = np.bincount(full.labels)
    assert np.bincount(ours.labels).tolist() == np.floor(per_class / 2 + 0.5).tolist()
    assert whole["num_train_examples"] == 54
    assert subset["num_train_examples"] == ours.num_examples
    # Its rows are rows of the whole split's features: the same pixels, a subset.
    full_rows = {row.tobytes() for row in full.features()}
    assert all(row.tobytes() in full_rows for row in ours.features())
    # Probing the whole split again reads the whole split's cache, not the subset's.
    again = probe_main.run(config, _values(baseline="pixels", output_dir=output))
    assert again["num_train_examples"] == 54


def _probe_cli(*flags):
    return subprocess.run([sys.executable, "-m", "tf_simclr.probe", *flags],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def _assert_one_line_error(process, expected):
    assert process.returncode == 2, process.stderr[-2000:]
    assert "Traceback" not in process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, last


def test_model_dir_without_checkpoints_is_refused(pretrained, tmp_path):
    config_lib.save(pretrained.config, str(tmp_path / "empty"))
    _assert_one_line_error(_probe_cli(f"--model_dir={tmp_path / 'empty'}"),
                           f"--model_dir={tmp_path / 'empty'} is a directory without "
                           "checkpoints")


def test_hub_module_of_another_input_size_is_refused(pretrained, tmp_path):
    other = _image_folder(tmp_path / "images24", per_class=4, size=24)
    module = pretrained.results["eval"]["saved_model"]
    _assert_one_line_error(
        _probe_cli(f"--hub_module={module}", "--dataset=image_folder", f"--data_dir={other}",
                   "--train_split=train[:50%]", "--eval_split=train[50%:]",
                   "--image_size=24", f"--output_dir={tmp_path / 'out'}"),
        f"--hub_module={module} takes 16x16 images but --image_size=24")


def test_unlabeled_data_is_refused(pretrained, tmp_path):
    flat = _image_folder(tmp_path / "flat", per_class=4, labelled=False)
    _assert_one_line_error(
        _probe_cli("--baseline=pixels", "--dataset=image_folder", f"--data_dir={flat}",
                   "--train_split=train[:50%]", "--eval_split=train[50%:]",
                   f"--image_size={SIZE}", f"--output_dir={tmp_path / 'out'}"),
        "has no labels; the probe needs a labelled train and eval split")


def test_split_without_labels_is_refused(tmp_path):
    config = config_lib.Config().replace(dataset="stl10", train_split="unlabelled",
                                         eval_split="test", image_size=96)
    with mock_tfds(num_examples=4), pytest.raises(errors.DataError) as raised:
        probe_main.run(config, _values(baseline="pixels", output_dir=str(tmp_path)))
    assert "--train_split='unlabelled' of stl10 has no labels" in str(raised.value)
    assert errors.exit_status(raised.value) == 2
