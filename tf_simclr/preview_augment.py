"""Preview the SimCLR augmentation: a PNG grid of augmented views of one image.

    python -m tf_simclr.preview_augment --image PATH [--image_size 224] --out grid.png \
        [--rows 4] [--cols 6] [--seed 0] [--color_jitter_strength 1.0] [--use_blur]
        [--crop_min_area 0.08]

Every tile is an independent view from tf_simclr.augment.SimCLRAugment (one batch,
each image with its own random parameters), so the grid shows the spread of crops,
flips, color jitter, grayscale and blur that pretraining sees. The same --seed
gives the same grid.

The flags live in their own absl FlagValues (tf_simclr.run defines --image_size,
--seed, ... on the global one), so both modules can be imported in one process.
"""

import os
import sys

from absl import app, flags

from tf_simclr import errors

FLAGS = flags.FlagValues()

# Sources larger than this many times the view side are downscaled first (keeps
# the batch of copies small); crops are relative, so the views look the same.
MAX_SOURCE_SCALE = 4


def define_flags(flag_values=FLAGS):
    flags.DEFINE_string("image", None, "Image file to augment (any format PIL reads).",
                        flag_values=flag_values)
    flags.DEFINE_integer("image_size", 224, "Side of each view in pixels.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_string("out", "augment_preview.png", "PNG file to write.",
                        flag_values=flag_values)
    flags.DEFINE_integer("rows", 4, "Rows of views in the grid.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_integer("cols", 6, "Columns of views in the grid.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of the views; the same seed gives the same grid.",
                         flag_values=flag_values)
    flags.DEFINE_float("color_jitter_strength", 1.0,
                       "Color distortion strength s (0 turns it off).",
                       lower_bound=0.0, flag_values=flag_values)
    flags.DEFINE_boolean("use_blur", True, "Blur each view with probability 0.5.",
                         flag_values=flag_values)
    flags.DEFINE_float("crop_min_area", 0.08,
                       "Smallest random crop as a fraction of the image area.",
                       lower_bound=1e-6, upper_bound=1.0, flag_values=flag_values)
    flags.DEFINE_integer("padding", 2, "White pixels between tiles.", lower_bound=0,
                         flag_values=flag_values)
    flags.mark_flag_as_required("image", flag_values=flag_values)


define_flags()


def load_image(path, image_size):
    """The image at `path` as uint8 RGB [H, W, 3]; DataError if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise errors.DataError(f"--image {path!r} does not exist or is not a file")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise errors.DataError(f"--image {path!r} is not a readable image: {e}") from e
    limit = MAX_SOURCE_SCALE * image_size
    if min(image.size) > limit:
        scale = limit / min(image.size)
        image = image.resize((max(1, round(image.width * scale)),
                              max(1, round(image.height * scale))), Image.BICUBIC)
    import numpy as np
    return np.asarray(image, dtype=np.uint8)


def make_grid(image, image_size=224, rows=4, cols=6, seed=0, color_jitter_strength=1.0,
              use_blur=True, padding=2, crop_min_area=0.08):
    """rows x cols augmented views of uint8 `image` [H, W, 3] as one uint8 grid.

    Returns uint8 [rows * S + (rows - 1) * padding, cols * S + (cols - 1) * padding, 3],
    white between tiles.
    """
    import numpy as np
    import tensorflow as tf

    from tf_simclr.augment import SimCLRAugment

    augment = SimCLRAugment(image_size, color_jitter_strength=color_jitter_strength,
                            use_blur=use_blur, crop_min_area=crop_min_area)
    batch = np.repeat(image[None], rows * cols, axis=0)
    views = augment(batch, seed=tf.constant([seed, 0], tf.int64)).numpy()
    tiles = np.round(views * 255.0).astype(np.uint8)
    step = image_size + padding
    grid = np.full((rows * step - padding, cols * step - padding, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, cols)
        grid[row * step:row * step + image_size, col * step:col * step + image_size] = tile
    return grid


def write_preview(image_path, out, image_size=224, rows=4, cols=6, seed=0,
                  color_jitter_strength=1.0, use_blur=True, padding=2, crop_min_area=0.08):
    """Reads `image_path`, writes the grid PNG to `out` and returns the grid."""
    from PIL import Image

    image = load_image(image_path, image_size)
    grid = make_grid(image, image_size, rows, cols, seed, color_jitter_strength, use_blur,
                     padding, crop_min_area)
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise errors.StorageError(f"--out {out!r}: directory {directory!r} does not exist")
    try:
        Image.fromarray(grid).save(out, format="PNG")
    except OSError as e:
        raise errors.StorageError(f"--out {out!r} cannot be written: {e}") from e
    return grid


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; expected only --flags.")
    try:
        grid = write_preview(FLAGS.image, FLAGS.out, FLAGS.image_size, FLAGS.rows, FLAGS.cols,
                             FLAGS.seed, FLAGS.color_jitter_strength, FLAGS.use_blur,
                             FLAGS.padding, FLAGS.crop_min_area)
    except errors.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(errors.exit_status(e))
    print(f"wrote {FLAGS.out}: {FLAGS.rows}x{FLAGS.cols} views of {FLAGS.image_size} px "
          f"({grid.shape[1]}x{grid.shape[0]} px)")


def _parse_flags(argv):
    """absl.app's flags_parser: our FlagValues, plus the global ones app.run expects."""
    if any(arg in ("-h", "-?", "--help", "--helpshort", "--helpfull") for arg in argv[1:]):
        print(__doc__)
        print(FLAGS.get_help())
        sys.exit(0)
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}\nTry --help.", file=sys.stderr)
        sys.exit(1)
    flags.FLAGS(argv[:1])
    return rest


def entry_point():
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    entry_point()
