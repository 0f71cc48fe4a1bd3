"""Helpers shared by tests (conftest.py sets up the logical CPU devices)."""

import contextlib
import os

NUM_LOGICAL_CPUS = 4


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILDREN = os.path.join(REPO, "tests", "children")


def start_child(tmp_path, script, args, env_extra=None):
    """Starts tests/children/`script` OUT.json *args in a fresh Python (Keras 3 unless
    env_extra says otherwise); a handle for finish_child."""
    import subprocess
    import sys
    name = script.removesuffix(".py")
    out = tmp_path / f"{name}.json"
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": ""})
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, os.path.join(CHILDREN, script), str(out)]
                            + [str(a) for a in args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return name, proc, out


def finish_child(child, timeout=900):
    """Waits for a start_child handle; its JSON report, with its stderr as "_stderr"."""
    import json
    import subprocess
    name, proc, out = child
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, f"{name} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    result = json.loads(out.read_text())
    result["_stderr"] = stderr
    return result


def run_child(tmp_path, script, args, env_extra=None):
    return finish_child(start_child(tmp_path, script, args, env_extra))


def cpu_devices(n):
    """The first n logical CPU device names, for MirroredStrategy(devices)."""
    if n > NUM_LOGICAL_CPUS:
        raise ValueError(f"n={n} > {NUM_LOGICAL_CPUS} logical CPUs set up in conftest.py")
    return [f"/cpu:{i}" for i in range(n)]


class ArraySource:
    """An in-memory ImageSource: uint8 images [N, H, W, 3] and int labels per split.

    Each input pipeline reads a contiguous shard, like TFDS even_splits.
    """

    def __init__(self, splits, num_classes, name="arrays"):
        import numpy as np

        from tf_simclr.data import DatasetInfo
        self._splits = {k: (np.asarray(x, np.uint8), np.asarray(y, np.int32))
                        for k, (x, y) in splits.items()}
        train_images = self._splits["train"][0]
        self.info = DatasetInfo(
            name=name, num_classes=num_classes, num_train_examples=len(train_images),
            num_eval_examples=len(self._splits.get("test", ([], []))[0]),
            image_shape=tuple(train_images.shape[1:]))

    def examples(self, split, input_context=None, shuffle_files=False, seed=None):
        import numpy as np
        import tensorflow as tf
        images, labels = self._splits[split]
        if input_context is not None and input_context.num_input_pipelines > 1:
            parts = np.array_split(np.arange(len(images)), input_context.num_input_pipelines)
            index = parts[input_context.input_pipeline_id]
            images, labels = images[index], labels[index]
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


def random_source(num_train=64, num_test=20, size=16, num_classes=3, seed=0):
    """An ArraySource of smooth random images whose class shifts the mean colour."""
    import numpy as np
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, num_classes, n)
        noise = rng.normal(0, 40, (n, size, size, 3))
        base = (labels[:, None, None, None] * 60 + 50).astype(float)
        return np.clip(base + noise, 0, 255).astype(np.uint8), labels

    return ArraySource({"train": split(num_train), "test": split(num_test)}, num_classes)


def tiny_config(model_dir, **fields):
    """A Config for a 16 px ResNet-18 at 1/16 width that trains in seconds."""
    from tf_simclr.config import Config
    defaults = dict(
        dataset="arrays", train_split="train", eval_split="test", image_size=16,
        resnet_depth=18, width_multiplier=0.0625, train_batch_size=8, eval_batch_size=8,
        train_steps=4, checkpoint_steps=2, steps_per_loop=1, optimizer="lars",
        learning_rate=0.5, warmup_epochs=0.0, temperature=0.5, use_blur=False,
        color_jitter_strength=0.5, num_proj_layers=2, proj_out_dim=16,
        keep_hub_module_max=0, model_dir=str(model_dir))
    defaults.update(fields)
    return Config().replace(**defaults).validate()


def mirrored(num_replicas):
    """MirroredStrategy over num_replicas logical CPUs, with fresh collective keys.

    Every strategy numbers its collective groups from _collective_key_base + 1, and
    a second strategy in the same process reusing them fails or hangs ("Shape
    mismatch in the collective instance", "joining a group with size 4, but that
    group has size 2"). TF's own tests move the base for each strategy; we also
    move it after creation so that strategies created later do not reuse ours.
    """
    import tensorflow as tf
    tf.distribute.MirroredStrategy._collective_key_base += 100_000
    strategy = tf.distribute.MirroredStrategy(cpu_devices(num_replicas))
    tf.distribute.MirroredStrategy._collective_key_base += 100_000
    return strategy


@contextlib.contextmanager
def mock_tfds(num_examples):
    """TFDS mock data that counts as prepared.

    mock_data serves random examples from as_dataset() but points builders at a
    non-existing data_dir, so is_prepared() says False; declare it True.
    """
    from unittest import mock

    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE), \
            mock.patch.object(tfds.core.DatasetBuilder, "is_prepared",
                              return_value=True):
        yield


def two_class_image_folder(root, per_class, size, names=("dark", "light")):
    """root/<name>/<i>.png: per_class noisy size x size RGB PNGs per class, dark or
    light (mean 60 or 180, sd 40, clipped), for runs on an image folder."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for label, name in enumerate(names):
        os.makedirs(root / name)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 120 * label, 40, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def train(config, source, replicas=1):
    """Builds a fresh TrainState (same initial weights) and trains; returns (state, trainer)."""
    import keras

    from tf_simclr.train import trainer
    keras.utils.set_random_seed(7)
    state = trainer.TrainState(config, mirrored(replicas), source.info.num_classes,
                               source.info.num_train_examples)
    loop = trainer.Trainer(state, source)
    loop.run()
    return state, loop


def weights(model):
    """{variable path: value} of a model."""
    import numpy as np
    return {v.path: np.array(v.numpy()) for v in model.variables}


def assert_same_history(a, b, rtol=1e-5, atol=1e-7):
    """Two Trainer.history lists: the same steps and metrics within tolerance."""
    import numpy as np
    assert [step for step, _ in a] == [step for step, _ in b]
    for (step, x), (_, y) in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_allclose(x[key], y[key], rtol=rtol, atol=atol,
                                       err_msg=f"{key} at step {step}")


def assert_same_weights(a, b, rtol=2e-4, atol=2e-5):
    """Two `weights()` dicts: the same variables and values within tolerance."""
    import numpy as np
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def keep_only_checkpoint(model_dir, step):
    """Leaves model_dir as if the run had died right after saving ckpt-<step>."""
    import os
    import time

    import tensorflow as tf
    manager_state = tf.train.get_checkpoint_state(model_dir)
    keep = os.path.join(model_dir, f"ckpt-{step}")
    assert keep in manager_state.all_model_checkpoint_paths
    for path in manager_state.all_model_checkpoint_paths:
        if path != keep:
            for name in tf.io.gfile.glob(path + ".*"):
                os.remove(name)
    with open(os.path.join(model_dir, "checkpoint"), "w", encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\n'
                f'all_model_checkpoint_paths: "ckpt-{step}"\n'
                f'all_model_checkpoint_timestamps: {time.time()}\n')


def resume_after(config, source, step, resumed_dir):
    """Copies config's finished model_dir to `resumed_dir`, keeps only ckpt-<step>
    (as if the run died after saving it) and trains on from there; returns
    (state, trainer) of the resumed run."""
    import shutil
    shutil.copytree(config.train.model_dir, resumed_dir)
    keep_only_checkpoint(str(resumed_dir), step)
    return train(config.replace(model_dir=str(resumed_dir)), source)
