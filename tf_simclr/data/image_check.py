"""The cheap check of an image file, run on every file of an image folder.

Decoding every image up front would cost a full pass over the data (an hour for
ImageNet on a small host). Instead each file is checked cheaply, in parallel: its
header must parse (PIL) as a format tf.io.decode_image reads, and its end must be
intact (JPEG end marker, PNG IEND chunk, GIF trailer, BMP/WebP declared size). Only
a file whose end looks wrong is decoded with TensorFlow to decide. This finds
empty, non-image, truncated, oversized and unsupported files.
"""

import concurrent.futures
import logging
import os
import time

import tensorflow as tf
from PIL import Image

logger = logging.getLogger(__name__)

# Larger images are refused like corrupt ones: decoding one (e.g. a decompression
# bomb of a few KB) would take hundreds of MiB in every tf.data worker.
MAX_IMAGE_PIXELS = 2**26
_DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_BMP_BITS_PER_PIXEL = (8, 24, 32)   # what tf.io.decode_bmp reads
_CHECK_THREADS = 16


def _ends_intact(image_format, head, tail, size):
    """Whether the file's last bytes are those of a complete image of its format."""
    if image_format == "JPEG":
        return tail.endswith(b"\xff\xd9")
    if image_format == "PNG":
        return tail.endswith(b"IEND\xaeB`\x82")
    if image_format == "GIF":
        return tail.endswith(b";")
    if image_format == "BMP":
        return int.from_bytes(head[2:6], "little") <= size
    return int.from_bytes(head[4:8], "little") + 8 <= size   # WEBP: RIFF size


def check_image_file(path):
    """(problem, (height, width)): problem is None for a usable image, else why not.

    Reads the header and the last bytes; decodes with TensorFlow only when the end
    of the file looks wrong (truncated, or data after the end marker).
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)", None
        # PIL raises many types on garbage (OSError, SyntaxError, ValueError,
        # DecompressionBombError, struct.error); each means "not usable".
        with Image.open(path) as image:
            image_format, (width, height) = image.format, image.size
        with open(path, "rb") as f:
            head = f.read(32)
            f.seek(max(0, size - 16))
            tail = f.read()
    except Exception as e:  # noqa: BLE001
        return f"not a readable image ({type(e).__name__}: {e})", None
    if width * height > MAX_IMAGE_PIXELS:
        return (f"too large: {width}x{height} = {width * height} pixels; expected at most "
                f"{MAX_IMAGE_PIXELS} (decoded RGB it would take "
                f"{3 * width * height / 2**20:.0f} MiB per read)"), None
    if image_format not in _DECODABLE_FORMATS:
        return (f"{image_format} image; tf.io.decode_image reads "
                f"{', '.join(_DECODABLE_FORMATS)}"), None
    if image_format == "BMP":
        bits = int.from_bytes(head[28:30], "little")
        if bits not in _BMP_BITS_PER_PIXEL:
            return (f"BMP with {bits} bits per pixel; tf.io.decode_bmp reads "
                    f"{_BMP_BITS_PER_PIXEL}"), None
    if not _ends_intact(image_format, head, tail, size):
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
        except tf.errors.OpError as e:
            reason = e.message.split("}}")[-1].strip().splitlines()[0]
            return f"truncated or corrupt {image_format} ({reason})", None
    return None, (height, width)


def check_files(root, relative_paths):
    """{relative path: (problem, (height, width))} for every file, in parallel."""
    start = time.time()
    paths = [os.path.join(root, p) for p in relative_paths]
    with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
        results = dict(zip(relative_paths, pool.map(check_image_file, paths)))
    logger.info("Checked %d image files under %s in %.1f s.", len(paths), root,
                time.time() - start)
    return results
