"""Offline Fashion-MNIST: gzip header rebuild, TFDS prepare, locking, errors.

The tests that need Debian's dataset-fashion-mnist files skip without them. The
real prepare (about 30 s) runs once for this module.
"""

import gzip
import hashlib
import io
import logging
import os
import shutil
import threading
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_simclr import data
from tf_simclr.config import DataConfig
from tf_simclr.data import DataError, DatasetInfo, fashion_mnist_offline
from tf_simclr.data.fashion_mnist_offline import DEBIAN_DIR, RELEASE_MTIMES

HAVE_DEBIAN_FILES = all(os.path.isfile(os.path.join(DEBIAN_DIR, name))
                        for name in RELEASE_MTIMES)
needs_debian_files = pytest.mark.skipif(
    not HAVE_DEBIAN_FILES,
    reason=f"Debian's Fashion-MNIST files are not in {DEBIAN_DIR} "
           "(apt-get install dataset-fashion-mnist)")
STALE_DIR = os.path.join("fashion_mnist", "incomplete.KILLED_3.0.1")


def _registered_sha256():
    return {info.filename: info.checksum
            for info in tfds.builder("fashion_mnist").url_infos.values()}


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _capture_log():
    """A handler collecting fashion_mnist_offline's INFO+ messages; remove after."""
    handler = _Messages()
    logger = logging.getLogger(fashion_mnist_offline.__name__)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _release_log(handler):
    logger = logging.getLogger(fashion_mnist_offline.__name__)
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, log messages) of one real prepare from the Debian files.

    The data_dir already holds what a killed prepare leaves behind: a TFDS
    incomplete.* folder with a partial file.
    """
    if not HAVE_DEBIAN_FILES:
        pytest.skip(f"Debian's Fashion-MNIST files are not in {DEBIAN_DIR}")
    data_dir = tmp_path_factory.mktemp("tfds")
    stale = data_dir / STALE_DIR
    stale.mkdir(parents=True)
    (stale / "fashion_mnist-train.tfrecord-00000-of-00001").write_bytes(b"partial")
    handler = _capture_log()
    try:
        fashion_mnist_offline.ensure_prepared(str(data_dir))
    finally:
        _release_log(handler)
    return str(data_dir), handler.messages


def _raw_release(prefix):
    """(images uint8 [N, 28, 28], labels uint8 [N]) from Debian's idx files."""
    with gzip.open(os.path.join(DEBIAN_DIR, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(DEBIAN_DIR, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


# Header rebuild -------------------------------------------------------------------

def test_restore_gzip_header_gives_the_file_gzip_writes_with_name_and_mtime():
    payload = b"fashion" * 1000
    with_name = io.BytesIO()
    with gzip.GzipFile(filename="data-idx1-ubyte", mode="wb", fileobj=with_name,
                       mtime=0x59A7E9DE) as f:
        f.write(payload)
    original = with_name.getvalue()
    name_end = original.index(b"\0", 10) + 1
    # What Debian ships: FLG 0, MTIME reset, no name.
    stripped = (original[:3] + b"\0" + (0x5EDA0AED).to_bytes(4, "little")
                + original[8:10] + original[name_end:])
    assert gzip.decompress(stripped) == payload
    assert fashion_mnist_offline.restore_gzip_header(
        stripped, "data-idx1-ubyte", 0x59A7E9DE) == original


def test_restore_gzip_header_refuses_other_files():
    with pytest.raises(DataError, match=r"expected a deflate gzip file without optional "
                                        r"header fields .*got 89504e47"):
        fashion_mnist_offline.restore_gzip_header(b"\x89PNG\r\n\x1a\n....", "x", 0)


def test_rebuild_refuses_files_that_are_not_the_release(tmp_path):
    fake = tmp_path / "debian"
    fake.mkdir()
    for name in RELEASE_MTIMES:
        (fake / name).write_bytes(gzip.compress(b"not fashion mnist", mtime=0))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz rebuilt to sha256 "
                                        r"[0-9a-f]{64}, but TFDS expects 3aede38d"):
        fashion_mnist_offline.rebuild_release_files(str(fake), str(out),
                                                    _registered_sha256())


@needs_debian_files
def test_debian_files_rebuild_to_the_registered_sha256(tmp_path):
    registered = _registered_sha256()
    fashion_mnist_offline.rebuild_release_files(DEBIAN_DIR, str(tmp_path), registered)
    for name in RELEASE_MTIMES:
        with open(os.path.join(DEBIAN_DIR, name), "rb") as f:
            debian = f.read()
        rebuilt = (tmp_path / name).read_bytes()
        assert hashlib.sha256(debian).hexdigest() != registered[name]
        assert hashlib.sha256(rebuilt).hexdigest() == registered[name]
        assert gzip.decompress(rebuilt) == gzip.decompress(debian)


# Errors -----------------------------------------------------------------------------

def test_unprepared_without_debian_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataError) as error:
        fashion_mnist_offline.ensure_prepared(str(tmp_path / "tfds"),
                                              debian_dir=str(tmp_path / "none"))
    message = str(error.value)
    assert "not prepared in " + str(tmp_path / "tfds") in message
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "tfds build fashion_mnist" in message
    assert not (tmp_path / "tfds").exists()


def test_data_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / "tfds"
    a_file.write_text("x")
    with pytest.raises(DataError, match=r"--data_dir '.*/tfds' is a file"):
        data.build_source(DataConfig(dataset="fashion_mnist", data_dir=str(a_file)))


# The prepared dataset ---------------------------------------------------------------

def test_prepared_test_split_equals_the_raw_release(prepared):
    data_dir, _ = prepared
    source = data.build_source(DataConfig(dataset="fashion_mnist", data_dir=data_dir,
                                              train_split="train", eval_split="test"))
    assert source.info == DatasetInfo("fashion_mnist", 10, 60000, 10000, (28, 28, 3))
    images, labels = [], []
    for batch in source.examples("test").batch(2000):
        images.append(batch["image"].numpy())
        labels.append(batch["label"].numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (10000, 28, 28, 3)
    assert (images[..., 0] == images[..., 1]).all()
    assert (images[..., 0] == images[..., 2]).all()
    assert sorted(np.unique(labels).tolist()) == list(range(10))
    raw_images, raw_labels = _raw_release("t10k")
    ours = sorted(bytes([label]) + image.tobytes()
                  for image, label in zip(images[..., 0], labels))
    raw = sorted(bytes([label]) + image.tobytes()
                 for image, label in zip(raw_images, raw_labels))
    assert ours == raw


def test_interrupted_prepare_leftovers_are_reported_and_do_not_matter(prepared):
    data_dir, messages = prepared
    stale = os.path.join(data_dir, STALE_DIR)
    assert any(stale in m and "interrupted prepare" in m for m in messages)
    assert any("Prepared fashion_mnist" in m for m in messages)
    assert os.path.isdir(stale)   # not ours to delete
    assert tfds.builder("fashion_mnist", data_dir=data_dir).is_prepared()


def test_a_waiting_process_finds_the_dataset_prepared(prepared, tmp_path):
    """While another process holds the lock, ensure_prepared waits, then re-checks."""
    data_dir, _ = prepared
    dataset_dir = tmp_path / "fashion_mnist"
    dataset_dir.mkdir()
    lock_path = str(dataset_dir / ".tf_simclr_prepare.lock")
    errors = []

    def wait_and_prepare():
        try:
            fashion_mnist_offline.ensure_prepared(str(tmp_path))
        except Exception as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    handler = _capture_log()
    try:
        with mock.patch.object(fashion_mnist_offline, "_prepare",
                               side_effect=AssertionError("prepared a second time")), \
                fashion_mnist_offline._exclusive_lock(lock_path):
            waiter = threading.Thread(target=wait_and_prepare)
            waiter.start()
            waiter.join(timeout=2)
            assert waiter.is_alive()   # blocked on the lock
            # The other process finishes the way TFDS does: complete, then rename.
            shutil.copytree(os.path.join(data_dir, "fashion_mnist", "3.0.1"),
                            dataset_dir / "incomplete.OTHER_3.0.1")
            os.rename(dataset_dir / "incomplete.OTHER_3.0.1", dataset_dir / "3.0.1")
        waiter.join(timeout=60)
    finally:
        _release_log(handler)
    assert not waiter.is_alive()
    assert errors == []
    assert any("Waiting for another process" in m for m in handler.messages)
    assert any("prepared in" in m and "by another process" in m
               for m in handler.messages)


@pytest.mark.slow  # reads the 60000 training records twice: about 20 s
def test_label_fraction_of_fashion_mnist_keeps_one_percent_of_each_class(prepared):
    data_dir, _ = prepared
    source = data.build_source(
        DataConfig(dataset="fashion_mnist", data_dir=data_dir, train_split="train",
                   eval_split="test", label_fraction=0.01), seed=0)
    labels = [int(ex["label"]) for ex in source.examples("train")]
    assert source.info.num_train_examples == 600
    assert np.bincount(labels).tolist() == [60] * 10   # 6000 per class
