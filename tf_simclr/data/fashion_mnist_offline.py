"""Fashion-MNIST without internet: prepare TFDS's fashion_mnist from Debian's files.

Debian's `dataset-fashion-mnist` ships the four original gzip files of the
Zalando release in /usr/share/datasets/fashion-mnist. TFDS refuses them: Debian's
dh_strip_nondeterminism dropped the gzip FNAME field and reset MTIME, so the
sha256 differs from TFDS's registered checksums. The deflate data is untouched.
Writing the original header fields back (the upstream MTIME and file name) gives
byte-identical files, which TFDS accepts from a manual_dir and prepares with its
public API in about 30 s on two cores.

`ensure_prepared(data_dir)` does this once per data_dir. TFDS writes into a
temporary folder and renames it when complete, so a killed prepare leaves no
half dataset. A file lock serialises concurrent prepares on one host, and whoever
waited finds the dataset prepared and returns.
"""

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import struct
import tempfile
import time

import tensorflow_datasets as tfds

from tf_simclr.data.source import DataError

logger = logging.getLogger(__name__)

NAME = "fashion_mnist"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# gzip MTIME of each file of the upstream release (GitHub zalandoresearch).
RELEASE_MTIMES = {
    "train-images-idx3-ubyte.gz": 0x59A7E9DE,
    "train-labels-idx1-ubyte.gz": 0x59A7E9DE,
    "t10k-images-idx3-ubyte.gz": 0x59A7E9F3,
    "t10k-labels-idx1-ubyte.gz": 0x59A7E9F3,
}
SPLIT_SIZES = {"train": 60000, "test": 10000}
_GZIP_MAGIC = b"\x1f\x8b\x08"
_GZIP_FNAME = 0x08
_LOCK_NAME = ".tf_simclr_prepare.lock"


def restore_gzip_header(stripped, filename, mtime):
    """The gzip file `stripped` with FNAME=`filename` and MTIME=`mtime` put back.

    A gzip header is ID1 ID2 CM FLG MTIME[4] XFL OS, then (FLG bit 3) a
    zero-terminated file name; the deflate stream follows unchanged.

    Args:
      stripped: bytes of a gzip file without FNAME (FLG == 0).
      filename: the name to store, e.g. "train-images-idx3-ubyte".
      mtime: int, seconds since the epoch.
    """
    if stripped[:3] != _GZIP_MAGIC or stripped[3] != 0:
        raise DataError(f"expected a deflate gzip file without optional header "
                        f"fields (bytes 1f8b08 00...); got {stripped[:4].hex()}.")
    return (stripped[:3] + bytes([_GZIP_FNAME]) + struct.pack("<I", mtime)
            + stripped[8:10] + filename.encode("ascii") + b"\0" + stripped[10:])


def rebuild_release_files(debian_dir, out_dir, registered_sha256):
    """Writes the four release files into `out_dir`, checked against TFDS.

    Args:
      debian_dir: folder with Debian's header-stripped .gz files.
      out_dir: where to write the rebuilt files (same names).
      registered_sha256: {file name: sha256 hex} that TFDS expects.

    Raises:
      DataError: a file is missing or does not rebuild to the registered sha256.
    """
    for name, mtime in RELEASE_MTIMES.items():
        path = os.path.join(debian_dir, name)
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != registered_sha256[name]:
            try:
                data = restore_gzip_header(data, name[:-len(".gz")], mtime)
            except DataError as e:
                raise DataError(f"{path}: {e}") from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != registered_sha256[name]:
            raise DataError(
                f"{path} rebuilt to sha256 {digest}, but TFDS expects "
                f"{registered_sha256[name]}; it is not the Fashion-MNIST release "
                "TFDS knows. Expected Debian's dataset-fashion-mnist files, or run "
                f"`tfds build {NAME}` on a machine with internet.")
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)


def ensure_prepared(data_dir=None, debian_dir=DEBIAN_DIR):
    """Makes TFDS fashion_mnist prepared in `data_dir`, from the Debian files if needed.

    Args:
      data_dir: the TFDS data_dir (created if missing); None for TFDS's default.
      debian_dir: where Debian's dataset-fashion-mnist put the .gz files.

    Raises:
      DataError: not prepared and the Debian files are missing or wrong, or
        data_dir is not a writable directory.
    """
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir!r} is a file; expected a directory.")
    if tfds.builder(NAME, data_dir=data_dir).is_prepared():
        return
    missing = [n for n in RELEASE_MTIMES
               if not os.path.isfile(os.path.join(debian_dir, n))]
    if missing:
        raise DataError(
            f"--dataset={NAME} is not prepared in "
            f"{data_dir or 'the default TFDS data_dir'} and {debian_dir} lacks "
            f"{', '.join(missing)}; expected Debian's files (`apt-get install "
            f"dataset-fashion-mnist`), or run `tfds build {NAME}` on a machine "
            "with internet.")
    dataset_dir = os.path.dirname(tfds.builder(NAME, data_dir=data_dir).data_dir)
    try:
        os.makedirs(dataset_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {dataset_dir} to prepare {NAME} in "
                        f"({e}); expected a writable --data_dir.") from e
    with _exclusive_lock(os.path.join(dataset_dir, _LOCK_NAME)):
        builder = tfds.builder(NAME, data_dir=data_dir)   # re-read under the lock
        if builder.is_prepared():
            logger.info("%s was prepared in %s by another process.", NAME,
                        builder.data_dir)
            return
        _prepare(builder, data_dir, debian_dir)


@contextlib.contextmanager
def _exclusive_lock(path):
    """Holds an exclusive flock on `path`; the kernel drops it if we are killed."""
    with open(path, "a") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process that prepares %s (lock %s).",
                        NAME, path)
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _prepare(builder, data_dir, debian_dir):
    """Rebuilds the release files in a temp dir and runs the TFDS prepare."""
    stale = glob.glob(os.path.join(os.path.dirname(builder.data_dir), "incomplete.*"))
    if stale:
        logger.warning("Found %s, left by an interrupted prepare; TFDS ignores them "
                       "and they can be deleted when no prepare runs.",
                       ", ".join(sorted(stale)))
    registered = {info.filename: info.checksum for info in builder.url_infos.values()}
    logger.info("Preparing %s in %s from %s (rebuilt gzip headers); this takes "
                "about 30 s once.", NAME, builder.data_dir, debian_dir)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_release_") as tmp:
        manual_dir = os.path.join(tmp, "manual")
        os.makedirs(manual_dir)
        rebuild_release_files(debian_dir, manual_dir, registered)
        # Downloads and extracted files stay in tmp; only the dataset lands in
        # data_dir. No GCS lookup: this path is for machines without internet.
        builder.download_and_prepare(
            download_dir=os.path.join(tmp, "downloads"),
            download_config=tfds.download.DownloadConfig(
                manual_dir=manual_dir, extract_dir=os.path.join(tmp, "extracted"),
                try_download_gcs=False))
    prepared = tfds.builder(NAME, data_dir=data_dir)
    sizes = ({name: prepared.info.splits[name].num_examples for name in SPLIT_SIZES}
             if prepared.is_prepared() else None)
    if sizes != SPLIT_SIZES:
        raise DataError(f"preparing {NAME} in {builder.data_dir} gave split sizes "
                        f"{sizes}; expected {SPLIT_SIZES}.")
    logger.info("Prepared %s in %s in %.0f s.", NAME, builder.data_dir,
                time.time() - start)
