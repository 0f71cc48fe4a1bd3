"""TFDS sources: metadata, decoding to RGB, sharding, order, label_fraction, errors.

Two kinds of TFDS data, neither downloaded:
* `tfds.testing.mock_data` for real dataset names (cifar10, imagenet2012, stl10,
  fashion_mnist). It has no split metadata, so sizes are counted by reading.
* `tiny_gray`: a 3-class builder defined here and prepared into a temp dir
  (4 files per split), for everything that needs real TFDS metadata and files.
  Example i has every pixel equal to i and label i % 3.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from testutil import cpu_devices, mock_tfds
from tf_simclr import data
from tf_simclr.config import DataConfig
from tf_simclr.data import DataError, DatasetInfo

TINY_TRAIN = range(0, 60)
TINY_TEST = range(100, 130)


class TfSimclrTinyGray(tfds.core.GeneratorBasedBuilder):
    """8x8 grayscale images; registered as "tf_simclr_tiny_gray"."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(8, 8, 1)),
                "label": tfds.features.ClassLabel(num_classes=3)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(TINY_TRAIN),
                "test": self._generate_examples(TINY_TEST)}

    def _generate_examples(self, ids):
        for i in ids:
            yield i, {"image": np.full((8, 8, 1), i, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    TfSimclrTinyGray(data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4,
                                                     try_download_gcs=False))
    return data_dir


def _tiny(data_dir, **fields):
    fields = {"dataset": "tf_simclr_tiny_gray", "data_dir": data_dir,
              "train_split": "train", "eval_split": "test", **fields}
    return DataConfig(**fields)


def _tfds_decoded(name, split):
    """TFDS's own decoding of the examples a source reads (image and label only,
    so that mock_data generates the same random examples)."""
    decoders = tfds.decode.PartialDecoding({"image": True, "label": True})
    return [(ex["image"].numpy(), int(ex["label"]))
            for ex in tfds.builder(name).as_dataset(split=split, decoders=decoders)]


def _pairs(ds):
    """[(image uint8 [H, W, 3], label int)] of a source's dataset."""
    return [(ex["image"].numpy(), int(ex["label"])) for ex in ds]


def _tiny_ids(ds):
    """The example ids (pixel values) of tiny_gray elements, in order."""
    ids = []
    for ex in ds:
        image = ex["image"].numpy()
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8
        assert (image == image[0, 0, 0]).all()
        assert int(ex["label"]) == image[0, 0, 0] % 3
        ids.append(int(image[0, 0, 0]))
    return ids


# Mocked real datasets ---------------------------------------------------------------

def test_cifar10_mock_images_and_labels_equal_tfds_decoding():
    with mock_tfds(num_examples=6):
        source = data.build_source(DataConfig(dataset="cifar10", eval_split="test"))
        assert source.info == DatasetInfo("cifar10", 10, 6, 6, (32, 32, 3))
        ds = source.examples("train")
        assert ds.element_spec["image"].shape == (32, 32, 3)
        assert ds.element_spec["label"].dtype == tf.int32
        ours = _pairs(ds)
        theirs = _tfds_decoded("cifar10", "train")
    assert len(ours) == 6
    for (image, label), (expected_image, expected_label) in zip(ours, theirs):
        np.testing.assert_array_equal(image, expected_image)
        assert label == expected_label


def test_imagenet_mock_ragged_images_have_no_fixed_shape():
    with mock_tfds(num_examples=5):
        source = data.build_source(DataConfig(dataset="imagenet2012"))
        assert source.info == DatasetInfo("imagenet2012", 1000, 5, 5, None)
        ds = source.examples("validation")
        assert ds.element_spec["image"].shape.as_list() == [None, None, 3]
        shapes = {image.shape for image, _ in _pairs(ds)}
    assert len(shapes) > 1
    assert all(shape[2] == 3 for shape in shapes)


def test_stl10_unlabelled_split_yields_label_minus_one():
    with mock_tfds(num_examples=5):
        source = data.build_source(
            DataConfig(dataset="stl10", train_split="unlabelled", eval_split="test"))
        unlabelled = _pairs(source.examples("unlabelled"))
        test = _pairs(source.examples("test"))
    assert source.info.num_classes == 10
    assert source.info.image_shape == (96, 96, 3)
    assert [label for _, label in unlabelled] == [-1] * 5
    assert all(0 <= label < 10 for _, label in test)


def test_grayscale_dataset_arrives_as_three_equal_channels():
    with mock_tfds(num_examples=4):
        source = data.build_source(DataConfig(dataset="fashion_mnist",
                                                  eval_split="test"))
        images = [image for image, _ in _pairs(source.examples("train"))]
        gray = [image for image, _ in _tfds_decoded("fashion_mnist", "train")]
    assert source.info.image_shape == (28, 28, 3)
    for rgb, expected in zip(images, gray):
        assert rgb.shape == (28, 28, 3)
        for channel in range(3):
            np.testing.assert_array_equal(rgb[..., channel], expected[..., 0])


def test_mock_input_context_shards_are_disjoint_and_cover_the_split():
    with mock_tfds(num_examples=7):
        source = data.build_source(DataConfig(dataset="cifar10", eval_split="test"))
        whole = [image.tobytes() for image, _ in _pairs(source.examples("train"))]
        shards = [[image.tobytes() for image, _ in _pairs(source.examples(
            "train", tf.distribute.InputContext(3, index, 3)))] for index in range(3)]
    assert sorted(len(s) for s in shards) == [2, 2, 3]
    assert sorted(sum(shards, [])) == sorted(whole)
    assert len(set(whole)) == 7


def test_mock_label_fraction_keeps_the_same_fraction_of_every_class():
    with mock_tfds(num_examples=80):
        full = data.build_source(DataConfig(dataset="cifar10", eval_split="test"))
        all_labels = [label for _, label in _pairs(full.examples("train"))]
        config = DataConfig(dataset="cifar10", eval_split="test", label_fraction=0.3)
        subset = _pairs(data.build_source(config, seed=3).examples("train"))
        again = _pairs(data.build_source(config, seed=3).examples("train"))
        other = _pairs(data.build_source(config, seed=4).examples("train"))
    counts = np.bincount(all_labels, minlength=10)
    expected = [max(1, int(np.floor(0.3 * n + 0.5))) for n in counts]
    assert sum(expected) < 80 and max(counts) > 3   # a real subset of real classes
    assert list(np.bincount([label for _, label in subset], minlength=10)) == expected
    assert [image.tobytes() for image, _ in again] == [i.tobytes() for i, _ in subset]
    assert {i.tobytes() for i, _ in other} != {i.tobytes() for i, _ in subset}


def test_label_fraction_of_unlabelled_split_is_refused():
    with mock_tfds(num_examples=5), pytest.raises(
            DataError, match=r"--label_fraction=0.5 needs labelled examples.*"
                             r"'unlabelled' of stl10 has 5 unlabeled"):
        data.build_source(DataConfig(dataset="stl10", train_split="unlabelled",
                                         eval_split="test", label_fraction=0.5))


def test_dataset_without_image_and_class_label_is_refused():
    with mock_tfds(num_examples=2), pytest.raises(
            DataError, match=r"'imdb_reviews' is not an image-classification dataset.*"
                             r"image_folder"):
        data.build_source(DataConfig(dataset="imdb_reviews"))


# A real prepared dataset ------------------------------------------------------------

def test_info_comes_from_tfds_metadata(tiny_dir):
    source = data.build_source(_tiny(tiny_dir))
    assert source.info == DatasetInfo("tf_simclr_tiny_gray", 3, 60, 30, (8, 8, 3))
    assert sorted(_tiny_ids(source.examples("train"))) == list(TINY_TRAIN)
    assert sorted(_tiny_ids(source.examples("test"))) == list(TINY_TEST)


def test_split_slices_are_tfds_slices(tiny_dir):
    source = data.build_source(_tiny(tiny_dir, train_split="train[:25%]",
                                         eval_split="train[25%:]"))
    assert (source.info.num_train_examples, source.info.num_eval_examples) == (15, 45)
    head = _tiny_ids(source.examples("train[:25%]"))
    tail = _tiny_ids(source.examples("train[25%:]"))
    assert len(head) == 15 and len(tail) == 45
    assert sorted(head + tail) == list(TINY_TRAIN)


@pytest.mark.parametrize("num_pipelines", [2, 7])
def test_pipelines_read_disjoint_parts_covering_the_split(tiny_dir, num_pipelines):
    # 7 pipelines > 4 files: TFDS ReadConfig(input_context) would refuse this.
    source = data.build_source(_tiny(tiny_dir))
    shards = [_tiny_ids(source.examples(
        "train", tf.distribute.InputContext(num_pipelines, index, num_pipelines)))
        for index in range(num_pipelines)]
    assert sorted(sum(shards, [])) == list(TINY_TRAIN)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_order_is_fixed_by_the_seed(tiny_dir):
    source = data.build_source(_tiny(tiny_dir))
    plain = _tiny_ids(source.examples("train"))
    assert plain == _tiny_ids(source.examples("train"))
    seeded = [_tiny_ids(source.examples("train", shuffle_files=True, seed=seed))
              for seed in (1, 1, 2)]
    assert seeded[0] == seeded[1]
    assert seeded[0] != seeded[2]
    assert seeded[0] != plain
    assert sorted(seeded[2]) == list(TINY_TRAIN)


def test_label_fraction_subset_is_stratified_and_sharded(tiny_dir):
    config = _tiny(tiny_dir, label_fraction=0.25)
    source = data.build_source(config, seed=5)
    subset = _tiny_ids(source.examples("train"))
    # 20 examples per class -> 5 each.
    assert np.bincount([i % 3 for i in subset]).tolist() == [5, 5, 5]
    assert source.info.num_train_examples == 15
    assert source.info.num_eval_examples == 30
    shards = [_tiny_ids(source.examples("train", tf.distribute.InputContext(2, i, 2)))
              for i in range(2)]
    assert sorted(sum(shards, [])) == sorted(subset)
    assert len(_tiny_ids(source.examples("test"))) == 30   # eval is never subset
    assert set(_tiny_ids(data.build_source(config, seed=5).examples("train"))) == \
        set(subset)
    assert set(_tiny_ids(data.build_source(config, seed=6).examples("train"))) != \
        set(subset)


def test_hidden_labels_keep_every_image_and_label_only_the_subset(tiny_dir):
    # Distillation: every train image, labels outside the label_fraction subset -1.
    config = _tiny(tiny_dir, label_fraction=0.25)
    subset = set(_tiny_ids(data.build_source(config, seed=5).examples("train")))
    source = data.build_source(config, seed=5, hide_labels=True)
    seen = {}
    for ex in source.examples("train"):
        image_id = int(ex["image"][0, 0, 0])
        seen[image_id] = int(ex["label"])
    assert sorted(seen) == sorted(TINY_TRAIN)
    assert source.info.num_train_examples == len(TINY_TRAIN)
    assert {i for i, label in seen.items() if label >= 0} == subset
    assert all(seen[i] == i % 3 for i in subset)
    assert all(seen[i] == data.UNLABELED for i in set(seen) - subset)


@pytest.mark.parametrize("fields, message", [
    (dict(eval_split="validation"),
     r"--eval_split='validation': tf_simclr_tiny_gray has no split 'validation'; "
     r"expected one of test, train"),
    (dict(train_split="train+valid[:5]"), r"has no split 'valid'"),
    (dict(train_split="train[:abc]"),
     r"--train_split='train\[:abc\]' is not a valid TFDS split expression"),
])
def test_bad_splits_name_the_available_ones(tiny_dir, fields, message):
    with pytest.raises(DataError, match=message):
        data.build_source(_tiny(tiny_dir, **fields))


# Errors before any data is read ----------------------------------------------------

def test_unknown_dataset_lists_close_names_and_image_folder():
    with pytest.raises(DataError, match=r"--dataset='cifar_10' is not a TFDS dataset\. "
                                        r"Close matches: cifar10.*image_folder"):
        data.build_source(DataConfig(dataset="cifar_10"))


def test_unprepared_dataset_says_how_to_prepare_and_never_downloads(tmp_path):
    with pytest.raises(DataError) as error:
        data.build_source(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    message = str(error.value)
    assert "'cifar10' is not prepared in " + str(tmp_path) in message
    assert f"`tfds build cifar10 --data_dir={tmp_path}`" in message
    assert os.listdir(tmp_path) == []


def test_unprepared_manual_dataset_explains_the_manual_download(tmp_path):
    with pytest.raises(DataError, match=r"(?s)download the files described below into "
                                        r".*/downloads/manual.*ILSVRC2012_img_train.tar"):
        data.build_source(DataConfig(dataset="imagenet2012", data_dir=str(tmp_path)))


def test_missing_data_dir_and_file_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"--data_dir '.*/nowhere' does not exist"):
        data.build_source(DataConfig(dataset="cifar10",
                                         data_dir=str(tmp_path / "nowhere")))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match=r"--data_dir '.*/file' is a file"):
        data.build_source(DataConfig(dataset="cifar10", data_dir=str(a_file)))


def test_unknown_version_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"--dataset='cifar10:9.9.9'"):
        data.build_source(DataConfig(dataset="cifar10:9.9.9", data_dir=str(tmp_path)))


# Helpers ---------------------------------------------------------------------------

def test_stratified_subset_counts_rounding_and_order_independence():
    labels = [0] * 10 + [1] * 7 + [2] * 1 + [3] * 5
    keys = [f"k{i:02d}" for i in range(len(labels))]
    chosen = data.stratified_subset(keys, labels, 0.3, seed=0, name="d", split="s")
    by_key = dict(zip(keys, labels))
    # 0.3 * [10, 7, 1, 5] = [3, 2.1, 0.3, 1.5] -> [3, 2, 1 (at least one), 2 (half up)]
    assert np.bincount([by_key[k] for k in chosen]).tolist() == [3, 2, 1, 2]
    order = np.random.default_rng(1).permutation(len(keys))
    shuffled = data.stratified_subset([keys[i] for i in order],
                                          [labels[i] for i in order], 0.3, seed=0,
                                          name="d", split="s")
    assert shuffled.tolist() == chosen.tolist()


def test_split_names_and_unlabeled_splits():
    assert data.split_names("train[:10%]+unlabelled") == ["train", "unlabelled"]
    assert data.is_unlabeled_split("unlabelled[:50%]")
    assert not data.is_unlabeled_split("train+unlabelled")


def test_label_fraction_subset_reads_under_distribute_datasets_from_function(tiny_dir):
    source = data.build_source(_tiny(tiny_dir, label_fraction=0.5), seed=1)
    strategy = tf.distribute.MirroredStrategy(cpu_devices(2))
    dist = strategy.distribute_datasets_from_function(
        lambda context: source.examples("train", context).batch(
            context.get_per_replica_batch_size(4)))
    labels = [label for batch in dist
              for local in strategy.experimental_local_results(batch["label"])
              for label in local.numpy().tolist()]
    assert len(labels) == source.info.num_train_examples == 30
    assert np.bincount(labels).tolist() == [10, 10, 10]
