"""A folder of image files as a SimCLR source: --dataset=image_folder --data_dir=DIR.

Splits
  * Split layout: DIR has a sub-folder named like the train split (`DIR/train`
    for --train_split=train or train[:90%]). Every split then names a sub-folder
    (--eval_split=validation reads DIR/validation); a split without one is a
    DataError listing the sub-folders. Image files directly in DIR are an error.
  * Single layout: otherwise DIR as a whole is the train split. An eval split of
    the same name with a slice (train[90%:]) reads part of it. Any other eval
    split means there is no eval data: info.num_eval_examples is 0 and
    examples() of it raises DataError. --eval_split="" says so explicitly.
  * Slices follow TFDS: name[from:to] in files or percent (train[:90%],
    train[-500:]), taken from a fixed pseudo-random order of the files (a hash
    of each path relative to DIR). So slices mix the classes, train[:90%] and
    train[90%:] never overlap, and adding files moves no other file. `+` is not
    supported.

Labels, within a split folder
  * Labelled: only sub-folders hold images. Each one is a class (images at any
    depth below it); class ids 0..K-1 follow the sorted names of the train
    split's classes, and an eval split may only use those.
  * Unlabeled: only image files directly in the folder (a flat folder). Their
    label is -1; num_classes is 0 unless another split is labelled.
  * Both at once is a DataError. Names starting with "." are ignored, and so are
    files without an image extension (counted in the log).

Bad files (--bad_images)
  Decoding every image up front would cost a full pass over the data (an hour
  for ImageNet on a small host). Instead, building the source checks every file
  cheaply, in parallel: its header must parse (PIL) as a format
  tf.io.decode_image reads, and its end must be intact (JPEG end marker, PNG IEND
  chunk, GIF trailer, BMP/WebP declared size). Only a file whose end looks wrong
  is decoded with TensorFlow to decide. This finds empty, non-image, truncated
  and unsupported files. With bad_images="error" any of them is a DataError that
  lists them; with "skip" they are left out and logged.
  Damage inside an intact file (e.g. corrupt JPEG tables) shows only when
  decoding. examples() drops such a file instead of failing the epoch, and
  prints one line to stderr for each drop, with a count and the next file read.
"""

import dataclasses
import hashlib
import logging
import os
import re
import sys
from typing import Optional

import tensorflow as tf

from tf_simclr.data import image_check, source
from tf_simclr.data.source import UNLABELED, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# PIL format names of what tf.io.decode_image reads.
_LISTED_BAD_FILES = 10
_SPLIT = re.compile(r"^\s*([^\[\]+:]+?)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*$")


@dataclasses.dataclass(frozen=True)
class _SplitSpec:
    """A parsed split string: `name[start:stop]`; start/stop as written or None."""
    text: str
    name: str
    start: Optional[str] = None
    stop: Optional[str] = None

    def slice(self, items):
        """The items this spec selects from `items` (a list in read order)."""
        n = len(items)
        return items[_boundary(self.start, n):_boundary(self.stop, n)]


def _boundary(text, n):
    """A slice boundary of TFDS split syntax ("-10", "90%") as an index into n items."""
    if text is None:
        return None
    if text.endswith("%"):
        return int(round(int(text[:-1]) * n / 100.0))
    return int(text)


def _parse_split(split, flag):
    match = _SPLIT.match(split)
    if not match:
        raise DataError(
            f"--{flag}={split!r} is not a split of an image folder; expected a name "
            "with an optional slice, e.g. 'train', 'train[:90%]' or 'train[-500:]'.")
    name, start, stop = match.groups()
    for bound in (start, stop):
        if bound and bound.endswith("%") and abs(int(bound[:-1])) > 100:
            raise DataError(f"--{flag}={split!r}: percent slices must lie in "
                            "[-100%, 100%].")
    return _SplitSpec(split, name, start, stop)


@dataclasses.dataclass(frozen=True)
class _Folder:
    """The image files of one split folder."""
    path: str
    files: list   # [(path relative to the data_dir, class name or None if flat)]


def _visible(name):
    return not name.startswith(".")


def _is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_folder(root, folder):
    """The image files under `folder`, labelled by sub-folder or flat.

    Raises DataError when it holds both loose images and class sub-folders.
    """
    loose, subdirs, ignored = [], [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        if entry.is_dir():
            subdirs.append(entry.name)
        elif _is_image_name(entry.name):
            loose.append(entry.path)
        else:
            ignored.append(entry.path)
    by_class = {}
    for name in subdirs:
        files = _walk_images(os.path.join(folder, name), ignored)
        if files:
            by_class[name] = files
        else:
            logger.warning("Ignoring %s: it holds no %s files.",
                           os.path.join(folder, name), "/".join(IMAGE_EXTENSIONS))
    if ignored:
        logger.info("Ignoring %d files under %s without an image extension, e.g. %s.",
                    len(ignored), folder, ", ".join(ignored[:3]))
    if loose and by_class:
        raise DataError(
            f"{folder} holds both image files ({', '.join(loose[:3])}, ...) and class "
            f"sub-folders ({', '.join(list(by_class)[:3])}, ...); expected either only "
            "class sub-folders (labelled) or only image files (unlabeled).")
    if loose:
        return _Folder(folder, [(os.path.relpath(p, root), None) for p in loose])
    return _Folder(folder, [(os.path.relpath(p, root), name)
                            for name, paths in by_class.items() for p in paths])


def _walk_images(top, ignored):
    """Image files at any depth below `top`, following links (each dir once)."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filenames):
            if not _visible(name):
                continue
            (found if _is_image_name(name) else ignored).append(
                os.path.join(dirpath, name))
    return found


def _read_order(relative_path):
    """Sort key of the fixed pseudo-random file order: a hash of the path."""
    return hashlib.blake2b(relative_path.encode("utf-8"), digest_size=8).digest()


# The source -----------------------------------------------------------------------

class ImageFolderSource(source.ImageSource):
    """Image files in a folder; see the module docstring for the layout rules."""

    def __init__(self, data_config, seed=0, hide_labels=False):
        root = os.path.abspath(data_config.data_dir)
        source.check_directory(root, "--dataset=image_folder --data_dir")
        self._root = root
        train = _parse_split(data_config.train_split, "train_split")
        evaluation = (_parse_split(data_config.eval_split, "eval_split")
                      if data_config.eval_split else None)
        folders = self._split_folders(train, evaluation)
        class_names = self._class_names(folders, train, evaluation)
        checks = image_check.check_files(root, [f for folder in folders.values()
                                     for f, _ in folder.files])
        bad = sorted((path, problem) for path, (problem, _) in checks.items() if problem)
        self.bad_files = tuple((os.path.join(root, p), why) for p, why in bad)
        self._report_bad_files(data_config.bad_images, len(checks))

        class_ids = {name: i for i, name in enumerate(class_names)}
        self._splits = {}   # split string -> (relative paths [N], labels [N])
        self._missing_split = None
        for spec, flag in ((train, "train_split"), (evaluation, "eval_split")):
            if spec is None:
                continue
            if spec.name not in folders:
                self._missing_split = spec.text
                continue
            folder = folders[spec.name]
            usable = sorted(((f, UNLABELED if c is None else class_ids[c])
                             for f, c in folder.files if not checks[f][0]),
                            key=lambda pair: _read_order(pair[0]))
            selected = spec.slice(usable)
            if not selected:
                raise DataError(
                    f"--{flag}={spec.text!r} of {folder.path} selects no usable image "
                    f"files ({len(folder.files)} listed, "
                    f"{len(folder.files) - len(usable)} bad); expected at least one "
                    f"{'/'.join(IMAGE_EXTENSIONS)} file.")
            self._splits[spec.text] = ([f for f, _ in selected],
                                       [label for _, label in selected])
        self._train_split = train.text
        if data_config.label_fraction < 1:
            files, labels = self._splits[train.text]
            keep = set(source.stratified_subset(
                files, labels, data_config.label_fraction, seed,
                name=f"image_folder {root}", split=train.text).tolist())
            if hide_labels:
                self._splits[train.text] = (files, [label if f in keep else UNLABELED
                                                    for f, label in zip(files, labels)])
            else:
                kept = [i for i, f in enumerate(files) if f in keep]
                self._splits[train.text] = ([files[i] for i in kept],
                                            [labels[i] for i in kept])
        shapes = {checks[f][1] for files, _ in self._splits.values() for f in files}
        image_shape = shapes.pop() + (3,) if len(shapes) == 1 else None
        eval_files = (self._splits.get(evaluation.text, ([], []))[0]
                      if evaluation else [])
        self.info = source.DatasetInfo(
            name=source.IMAGE_FOLDER, num_classes=len(class_names),
            num_train_examples=len(self._splits[train.text][0]),
            num_eval_examples=len(eval_files), image_shape=image_shape)
        logger.info("image_folder %s: %s", root, self.info)

    def _split_folders(self, train, evaluation):
        """{split name: _Folder} for the train and eval splits that exist."""
        root = self._root
        subdirs = sorted(e.name for e in os.scandir(root)
                         if e.is_dir() and _visible(e.name))
        if train.name not in subdirs:   # single layout: the folder is the train split
            folder = _list_folder(root, root)
            if not folder.files:
                raise DataError(
                    f"--data_dir={root} holds no image files; expected "
                    f"{'/'.join(IMAGE_EXTENSIONS)} files, directly (unlabeled) or in "
                    "class sub-folders (labelled).")
            if evaluation and evaluation.name != train.name:
                logger.info("image_folder %s has no %r split folder: no eval data.",
                            root, evaluation.name)
            return {train.name: folder}
        loose = [e.name for e in os.scandir(root)
                 if e.is_file() and _visible(e.name) and _is_image_name(e.name)]
        if loose:
            raise DataError(
                f"--data_dir={root} has split folders ({', '.join(subdirs)}) and also "
                f"image files directly in it ({', '.join(sorted(loose)[:3])}, ...), "
                "which belong to no split; expected them inside a split folder.")
        folders = {}
        for spec in filter(None, (train, evaluation)):
            if spec.name not in subdirs:
                raise DataError(
                    f"--eval_split={spec.text!r}: {root} has no sub-folder "
                    f"{spec.name!r}; expected one of its split folders: "
                    f"{', '.join(subdirs)} (or --eval_split='' for no evaluation).")
            folder = _list_folder(root, os.path.join(root, spec.name))
            if not folder.files:
                raise DataError(f"{folder.path} holds no image files; expected "
                                f"{'/'.join(IMAGE_EXTENSIONS)} files.")
            folders[spec.name] = folder
        return folders

    def _class_names(self, folders, train, evaluation):
        """Sorted class names of the train split (else of the eval split)."""
        def names(spec):
            if spec is None or spec.name not in folders:
                return []
            return sorted({c for _, c in folders[spec.name].files if c is not None})
        train_names, eval_names = names(train), names(evaluation)
        if train_names:
            unknown = sorted(set(eval_names) - set(train_names))
            if unknown:
                raise DataError(
                    f"--eval_split={evaluation.text!r} of {self._root} has class "
                    f"folders {unknown} that the train split lacks; expected a subset "
                    f"of {train_names}.")
            return train_names
        return eval_names

    def _report_bad_files(self, policy, num_checked):
        if not self.bad_files:
            return
        listing = "\n".join(f"  {path}: {why}"
                            for path, why in self.bad_files[:_LISTED_BAD_FILES])
        more = len(self.bad_files) - _LISTED_BAD_FILES
        if more > 0:
            listing += f"\n  ... and {more} more"
        summary = (f"{len(self.bad_files)} of {num_checked} image files under "
                   f"{self._root} cannot be decoded")
        if policy == "error":
            raise DataError(f"{summary} (--bad_images=error):\n{listing}\nExpected "
                            "decodable JPEG/PNG/GIF/BMP/WebP files; fix or remove "
                            "them, or pass --bad_images=skip to leave them out.")
        logger.warning("%s; skipping them (--bad_images=skip):\n%s", summary, listing)
        for path, why in self.bad_files[_LISTED_BAD_FILES:]:
            logger.info("Skipped %s: %s", path, why)

    def examples(self, split, input_context=None, shuffle_files=False, seed=None):
        if split not in self._splits:
            if split == self._missing_split:
                raise DataError(
                    f"image_folder {self._root} has no {split!r} split: it is one "
                    f"folder, read as --train_split={self._train_split!r}. For "
                    "evaluation data, add a split folder (train/, validation/) or "
                    "slice the folder, e.g. --train_split='train[:90%]' "
                    "--eval_split='train[90%:]'.")
            raise DataError(f"image_folder {self._root} was built for the splits "
                            f"{sorted(self._splits)}; got split={split!r}.")
        files, labels = self._splits[split]
        num_pipelines, index = source.pipeline_shard(input_context)
        files, labels = files[index::num_pipelines], labels[index::num_pipelines]
        paths = [os.path.join(self._root, f) for f in files]
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(paths, tf.string), tf.constant(labels, tf.int32)))
        if shuffle_files:
            ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)
        return _decode_dropping_bad(ds, len(paths), self.info.image_shape)


def _decode_dropping_bad(ds, num_files, image_shape):
    """(path, label) -> {"image", "label"}, dropping files that fail to decode.

    Every element carries its read position; after ignore_errors a gap in the
    positions is a dropped file, printed to stderr. A sentinel after the last file
    reveals drops at the end.
    """
    sentinel = tf.data.Dataset.from_tensors(
        (tf.constant(""), tf.constant(UNLABELED, tf.int32)))
    ds = ds.concatenate(sentinel).enumerate()

    def decode(position, path_label):
        path, label = path_label
        is_sentinel = tf.equal(position, num_files)
        image = tf.cond(
            is_sentinel,
            lambda: tf.zeros(image_shape or (1, 1, 3), tf.uint8),
            lambda: source.decode_rgb(tf.io.read_file(path), image_shape))
        return position, path, {"image": image, "label": label}

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()

    def report_gap(next_position, element):
        position, path, example = element
        dropped = position - next_position
        if dropped > 0:
            if position == num_files:
                tf.print("image_folder: dropped", dropped, "file(s) that failed to "
                         "decode, at the end of the split", output_stream=sys.stderr)
            else:
                tf.print("image_folder: dropped", dropped, "file(s) that failed to "
                         "decode, just before", path, output_stream=sys.stderr)
        return position + 1, (position, example)

    ds = ds.scan(tf.constant(0, tf.int64), report_gap)
    ds = ds.filter(lambda position, _: position < num_files)
    return ds.map(lambda _, example: example)
