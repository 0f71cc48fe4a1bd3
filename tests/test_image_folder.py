"""image_folder: layouts, labels, slices, formats, bad files, label_fraction, sharding.

Every test writes its own small folder of generated images. Lossless images
(PNG, BMP, lossless WebP) are identified by their decoded pixels.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from testutil import cpu_devices
from tf_simclr import data
from tf_simclr.config import DataConfig
from tf_simclr.data import DataError, DatasetInfo

SIZE = (6, 8)   # (height, width) of most generated images


def _pixels(seed, size=SIZE):
    """Random uint8 [H, W, 3], different for each seed."""
    return np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)


def _write(path, pixels, mode="RGB", image_format="PNG", **options):
    """Saves `pixels` converted to `mode`; returns the RGB pixels it should decode to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, image_format, **options)
    return np.asarray(image.convert("RGB"))


def _class_folder(root, counts, start_seed=0):
    """root/<class>/<i>.png for {class: count}; returns {pixel bytes: class}."""
    expected, seed = {}, start_seed
    for name, count in counts.items():
        for i in range(count):
            seed += 1
            expected[_write(root / name / f"{i}.png", _pixels(seed)).tobytes()] = name
    return expected


def _source(root, seed=0, **fields):
    return data.build_source(
        DataConfig(dataset="image_folder", data_dir=str(root), **fields), seed=seed)


def _read(ds):
    """[(image uint8 [H, W, 3], label int)]."""
    return [(ex["image"].numpy(), int(ex["label"])) for ex in ds]


def _keys(ds):
    return [image.tobytes() for image, _ in _read(ds)]


def _by_key(ds):
    return [(image.tobytes(), label) for image, label in _read(ds)]


# Layouts and labels ------------------------------------------------------------------

def test_class_folders_are_labelled_by_sorted_name_and_decoded_to_rgb(tmp_path):
    expected = {}   # pixel bytes -> class id (ant 0, cat 1, dog 2)
    for i in range(3):
        expected[_write(tmp_path / "cat" / f"{i}.png", _pixels(i)).tobytes()] = 1
    for i in range(2):
        expected[_write(tmp_path / "dog" / f"{i}.png", _pixels(10 + i), "L").tobytes()] = 2
    rgba = np.dstack([_pixels(20), _pixels(21)[..., :1]])   # random alpha
    (tmp_path / "ant").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ant" / "0.png")
    expected[rgba[..., :3].tobytes()] = 0
    source = _source(tmp_path)
    assert source.info == DatasetInfo("image_folder", 3, 6, 0, SIZE + (3,))
    ds = source.examples("train")
    assert ds.element_spec["image"].shape == SIZE + (3,)
    assert ds.element_spec["image"].dtype == tf.uint8
    assert ds.element_spec["label"].dtype == tf.int32
    got = {image.tobytes(): label for image, label in _read(ds)}
    assert got == expected


def test_grayscale_jpeg_has_three_equal_channels(tmp_path):
    _write(tmp_path / "a" / "gray.jpg", _pixels(1), "L", "JPEG")
    (image, label), = _read(_source(tmp_path).examples("train"))
    assert image.shape == SIZE + (3,) and label == 0
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_gif_bmp_and_webp_decode(tmp_path):
    frames = [Image.fromarray(_pixels(s)).convert("P") for s in (1, 2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    expected = {np.asarray(frames[0].convert("RGB")).tobytes(): "gif first frame",
                _write(tmp_path / "b.bmp", _pixels(3), image_format="BMP").tobytes(): "bmp",
                _write(tmp_path / "w.webp", _pixels(4), image_format="WEBP",
                       lossless=True).tobytes(): "webp"}
    source = _source(tmp_path)
    assert source.bad_files == ()
    assert sorted(_keys(source.examples("train"))) == sorted(expected)


def test_flat_folder_is_unlabeled_and_has_no_eval_split(tmp_path):
    for i in range(4):
        _write(tmp_path / f"{i}.png", _pixels(i))
    source = _source(tmp_path)   # eval_split defaults to "validation"
    assert source.info == DatasetInfo("image_folder", 0, 4, 0, SIZE + (3,))
    assert [label for _, label in _read(source.examples("train"))] == [-1] * 4
    with pytest.raises(DataError, match=r"has no 'validation' split: it is one folder, "
                                        r"read as --train_split='train'.*"
                                        r"--eval_split='train\[90%:\]'"):
        source.examples("validation")


def test_split_folders_with_classes(tmp_path):
    train = _class_folder(tmp_path / "train", {"a": 3, "b": 2})
    validation = _class_folder(tmp_path / "validation", {"a": 2}, start_seed=100)
    test = _class_folder(tmp_path / "test", {"b": 1}, start_seed=200)
    source = _source(tmp_path, eval_split="validation")
    assert source.info == DatasetInfo("image_folder", 2, 5, 2, SIZE + (3,))
    ids = {"a": 0, "b": 1}
    assert dict(_by_key(source.examples("train"))) == {k: ids[c] for k, c in train.items()}
    assert dict(_by_key(source.examples("validation"))) == {
        k: ids[c] for k, c in validation.items()}
    source = _source(tmp_path, eval_split="test")
    assert dict(_by_key(source.examples("test"))) == {k: ids[c] for k, c in test.items()}


def test_flat_split_folders_are_unlabeled(tmp_path):
    for i in range(3):
        _write(tmp_path / "train" / f"{i}.png", _pixels(i))
    _write(tmp_path / "unlabeled" / "x.png", _pixels(9))
    source = _source(tmp_path, eval_split="unlabeled")
    assert (source.info.num_classes, source.info.num_train_examples,
            source.info.num_eval_examples) == (0, 3, 1)
    assert [label for _, label in _read(source.examples("unlabeled"))] == [-1]


def test_split_layout_errors_name_what_exists(tmp_path):
    _class_folder(tmp_path / "train", {"a": 1})
    _class_folder(tmp_path / "validation", {"a": 1, "zebra": 1}, start_seed=10)
    with pytest.raises(DataError, match=r"--eval_split='val': .* has no sub-folder 'val'; "
                                        r"expected one of its split folders: train, "
                                        r"validation"):
        _source(tmp_path, eval_split="val")
    with pytest.raises(DataError, match=r"class folders \['zebra'\] that the train split "
                                        r"lacks; expected a subset of \['a'\]"):
        _source(tmp_path, eval_split="validation")
    _write(tmp_path / "loose.png", _pixels(5))
    with pytest.raises(DataError, match=r"has split folders \(train, validation\) and also "
                                        r"image files directly in it \(loose.png"):
        _source(tmp_path, eval_split="")


def test_mixed_loose_images_and_class_folders_is_refused(tmp_path):
    _class_folder(tmp_path, {"cats": 1})
    _write(tmp_path / "stray.png", _pixels(7))
    with pytest.raises(DataError, match=r"holds both image files \(.*stray.png.*\) and "
                                        r"class sub-folders \(cats"):
        _source(tmp_path)


def test_hidden_entries_and_other_files_are_ignored(tmp_path):
    _class_folder(tmp_path, {"a": 2})
    (tmp_path / ".DS_Store").write_bytes(os.urandom(64))
    _write(tmp_path / ".cache" / "thumb.png", _pixels(50))
    _write(tmp_path / "a" / ".hidden.png", _pixels(51))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    source = _source(tmp_path)
    assert source.info.num_classes == 1 and source.info.num_train_examples == 2
    assert source.bad_files == ()


def test_image_shape_is_none_when_sizes_differ(tmp_path):
    _write(tmp_path / "a.png", _pixels(1))
    _write(tmp_path / "b.png", _pixels(2, size=(5, 5)))
    source = _source(tmp_path)
    assert source.info.image_shape is None
    assert source.examples("train").element_spec["image"].shape.as_list() == [None, None, 3]
    assert sorted(image.shape for image, _ in _read(source.examples("train"))) == [
        (5, 5, 3), (6, 8, 3)]


# Slices, order, sharding -------------------------------------------------------------

def test_slices_of_one_folder_are_disjoint_mixed_and_cover_it(tmp_path):
    everything = _class_folder(tmp_path, {"a": 20, "b": 20})
    source = _source(tmp_path, train_split="train[:75%]", eval_split="train[75%:]")
    assert (source.info.num_train_examples, source.info.num_eval_examples) == (30, 10)
    head = _by_key(source.examples("train[:75%]"))
    tail = _by_key(source.examples("train[75%:]"))
    assert sorted(k for k, _ in head + tail) == sorted(everything)
    assert {label for _, label in head} == {label for _, label in tail} == {0, 1}


def test_shuffle_order_is_fixed_by_the_seed_and_changes_per_epoch(tmp_path):
    _class_folder(tmp_path, {"a": 10, "b": 10})
    source = _source(tmp_path)
    plain = _keys(source.examples("train"))
    assert plain == _keys(source.examples("train"))

    def two_epochs(seed):
        return _keys(source.examples("train", shuffle_files=True, seed=seed).repeat(2))

    first = two_epochs(1)
    assert first == two_epochs(1)
    assert first != two_epochs(2)
    assert first[:20] != first[20:] and sorted(first[:20]) == sorted(first[20:])
    assert sorted(first[:20]) == sorted(plain) and first[:20] != plain


def test_input_pipelines_read_disjoint_parts(tmp_path):
    _class_folder(tmp_path, {"a": 5, "b": 5})
    source = _source(tmp_path)
    shards = [_keys(source.examples("train", tf.distribute.InputContext(3, i, 3)))
              for i in range(3)]
    assert sorted(len(s) for s in shards) == [3, 3, 4]
    assert sorted(sum(shards, [])) == sorted(_keys(source.examples("train")))


# label_fraction -----------------------------------------------------------------------

def test_label_fraction_is_stratified_and_seeded(tmp_path):
    _class_folder(tmp_path, {"a": 10, "b": 7, "c": 1, "d": 5})
    subset = _read(_source(tmp_path, label_fraction=0.3, seed=0).examples("train"))
    # 0.3 * [10, 7, 1, 5] = [3, 2.1, 0.3, 1.5] -> [3, 2, 1 (at least one), 2]
    assert np.bincount([label for _, label in subset]).tolist() == [3, 2, 1, 2]
    assert _source(tmp_path, label_fraction=0.3, seed=0).info.num_train_examples == 8
    same = _keys(_source(tmp_path, label_fraction=0.3, seed=0).examples("train"))
    other = _keys(_source(tmp_path, label_fraction=0.3, seed=1).examples("train"))
    assert same == [image.tobytes() for image, _ in subset]
    assert set(other) != set(same)


def test_hidden_labels_keep_every_file_and_label_only_the_subset(tmp_path):
    _class_folder(tmp_path, {"a": 10, "b": 7, "c": 1, "d": 5})
    subset = _by_key(_source(tmp_path, label_fraction=0.3, seed=0).examples("train"))
    source = data.build_source(DataConfig(dataset="image_folder", data_dir=str(tmp_path),
                                          label_fraction=0.3), seed=0, hide_labels=True)
    every = _by_key(source.examples("train"))
    assert len(every) == source.info.num_train_examples == 23
    assert sorted(pair for pair in every if pair[1] >= 0) == sorted(subset)
    assert sum(label == data.UNLABELED for _, label in every) == 23 - len(subset)


def test_label_fraction_of_a_flat_folder_is_refused(tmp_path):
    _write(tmp_path / "x.png", _pixels(1))
    with pytest.raises(DataError, match=r"--label_fraction=0.5 needs labelled examples, "
                                        r"but --train_split='train' of image_folder .* "
                                        r"has 1 unlabeled"):
        _source(tmp_path, label_fraction=0.5)


# Bad files ------------------------------------------------------------------------------

def _folder_with_bad_files(root):
    """4 good PNGs, 4 bad files and a README; returns (good pixel keys, bad paths)."""
    good = _class_folder(root, {"a": 2, "b": 2})
    jpeg = root / "a" / "full.jpg"
    _write(jpeg, _pixels(99, size=(64, 64)), image_format="JPEG")
    jpeg_bytes = jpeg.read_bytes()
    jpeg.unlink()
    bad = {"truncated": root / "a" / "truncated.jpg", "empty": root / "a" / "empty.jpg",
           "random": root / "b" / "random.jpg", "text": root / "b" / "text.png"}
    bad["truncated"].write_bytes(jpeg_bytes[:int(len(jpeg_bytes) * 0.6)])
    bad["empty"].write_bytes(b"")
    bad["random"].write_bytes(np.random.default_rng(3).bytes(700))
    bad["text"].write_text("this is not an image\n" * 20)
    (root / "README.txt").write_text("ignored: not an image extension")
    return good, bad


def test_bad_files_are_refused_up_front_with_error_policy(tmp_path):
    _, bad = _folder_with_bad_files(tmp_path)
    with pytest.raises(DataError) as error:
        _source(tmp_path, bad_images="error")
    message = str(error.value)
    assert f"4 of 8 image files under {tmp_path} cannot be decoded" in message
    assert f"{bad['truncated']}: truncated or corrupt JPEG" in message
    assert f"{bad['empty']}: empty file (0 bytes)" in message
    assert f"{bad['random']}: not a readable image" in message
    assert f"{bad['text']}: not a readable image" in message
    assert "pass --bad_images=skip" in message


def test_huge_images_are_refused_or_skipped_like_corrupt_ones(tmp_path):
    good = _class_folder(tmp_path, {"a": 2})
    huge = tmp_path / "a" / "huge.png"
    Image.new("L", (9000, 8000)).save(huge)   # 72 M pixels in a few KB
    assert huge.stat().st_size < 2**20
    with pytest.raises(DataError, match=rf"{huge}: too large: 9000x8000 = 72000000 pixels; "
                                        rf"expected at most {2**26}"):
        _source(tmp_path, bad_images="error")
    source = _source(tmp_path, bad_images="skip")
    assert [path for path, _ in source.bad_files] == [str(huge)]
    assert sorted(_keys(source.examples("train"))) == sorted(good)


def test_bad_files_are_skipped_and_reported_with_skip_policy(tmp_path, caplog):
    good, bad = _folder_with_bad_files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tf_simclr.data.image_folder"):
        source = _source(tmp_path, bad_images="skip")
    assert sorted(path for path, _ in source.bad_files) == sorted(
        str(p) for p in bad.values())
    warning, = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"4 of 8 image files under {tmp_path} cannot be decoded; skipping them" in warning
    assert all(str(p) in warning for p in bad.values())
    assert source.info.num_train_examples == 4
    assert sorted(_keys(source.examples("train"))) == sorted(good)


def test_damage_inside_an_intact_file_is_dropped_while_reading(tmp_path, capfd):
    _class_folder(tmp_path / "some", {"a": 3})
    damaged = bytearray((tmp_path / "some" / "a" / "0.png").read_bytes())
    damaged[45] ^= 0xFF   # inside the IDAT chunk: header and IEND stay intact
    (tmp_path / "some" / "a" / "0.png").write_bytes(bytes(damaged))
    source = _source(tmp_path / "some", bad_images="error")
    assert source.bad_files == () and source.info.num_train_examples == 3
    assert len(_keys(source.examples("train"))) == 2
    assert "image_folder: dropped 1 file(s) that failed to decode" in capfd.readouterr().err

    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "only.png").write_bytes(bytes(damaged))
    assert _keys(_source(tmp_path / "alone").examples("train")) == []
    assert ("dropped 1 file(s) that failed to decode, at the end of the split"
            in capfd.readouterr().err)


def test_a_folder_of_only_bad_files_selects_nothing(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"--train_split='train' of .* selects no usable "
                                        r"image files \(1 listed, 1 bad\)"):
        _source(tmp_path, bad_images="skip")


# Other bad input ------------------------------------------------------------------------

def test_empty_folder_names_the_extensions_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=rf"--data_dir={tmp_path} holds no image files; "
                                        r"expected \.jpg/\.jpeg/\.png/\.gif/\.bmp/\.webp"):
        _source(tmp_path)


def test_missing_data_dir_and_file_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"--data_dir '.*/nowhere' does not exist"):
        _source(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"--data_dir '.*/file' is a file"):
        _source(tmp_path / "file")


@pytest.mark.parametrize("split, message", [
    ("train[::2]", r"--train_split='train\[::2\]' is not a split of an image folder"),
    ("train+extra", r"is not a split of an image folder"),
    ("train[:150%]", r"percent slices must lie in \[-100%, 100%\]"),
])
def test_bad_split_syntax(tmp_path, split, message):
    _write(tmp_path / "x.png", _pixels(1))
    with pytest.raises(DataError, match=message):
        _source(tmp_path, train_split=split)


def test_examples_of_an_unconfigured_split(tmp_path):
    _write(tmp_path / "train" / "x.png", _pixels(1))
    _write(tmp_path / "test" / "y.png", _pixels(2))
    source = _source(tmp_path, eval_split="")
    with pytest.raises(DataError, match=r"was built for the splits \['train'\]; "
                                        r"got split='test'"):
        source.examples("test")


def test_reads_under_distribute_datasets_from_function(tmp_path):
    expected = _class_folder(tmp_path, {"a": 3, "b": 3})
    source = _source(tmp_path)
    strategy = tf.distribute.MirroredStrategy(cpu_devices(2))
    dist = strategy.distribute_datasets_from_function(
        lambda context: source.examples("train", context).batch(
            context.get_per_replica_batch_size(2)))
    images = [image.tobytes() for batch in dist
              for local in strategy.experimental_local_results(batch["image"])
              for image in local.numpy()]
    assert sorted(images) == sorted(expected)
