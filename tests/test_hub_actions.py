"""hub_export.actions: the export a training job runs after each evaluation."""

import os

import numpy as np
import tensorflow as tf

from hub_export.actions import SAVED_MODEL_DIRNAME, ExportAfterEval
from tf_simclr import config as config_lib
from tf_simclr.models import simclr as model_lib


def _config(model_dir, keep):
    return config_lib.Config().replace(resnet_depth=18, width_multiplier=0.0625, image_size=16,
                                       keep_hub_module_max=keep, model_dir=str(model_dir))


def test_exports_each_step_and_keeps_the_newest(tmp_path):
    config = _config(tmp_path, keep=2)
    model = model_lib.build_model(config, num_classes=0)
    action = ExportAfterEval()
    paths = [action(config, model, step)["saved_model"] for step in (10, 20, 30)]
    root = tmp_path / SAVED_MODEL_DIRNAME
    assert paths == [str(root / str(step)) for step in (10, 20, 30)]
    assert sorted(os.listdir(root)) == ["20", "30"]
    images = tf.random.stateless_uniform([2, 16, 16, 3], [3, 4])
    np.testing.assert_allclose(tf.saved_model.load(paths[-1])(images, training=False),
                               model(images, training=False)["final_avg_pool"],
                               rtol=1e-5, atol=1e-6)
    # A re-evaluation of a kept step replaces that export.
    assert action(config, model, 30)["saved_model"] == paths[-1]
    assert sorted(os.listdir(root)) == ["20", "30"]


def test_keep_zero_exports_nothing(tmp_path):
    config = _config(tmp_path, keep=0)
    model = model_lib.build_model(config, num_classes=0)
    assert ExportAfterEval()(config, model, 5) == {"saved_model": None}
    assert not (tmp_path / SAVED_MODEL_DIRNAME).exists()
