"""Tests of the preview tool (tf_simclr.preview_augment)."""

import itertools
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from augment_testutil import (
    uint8_images,
)
from tf_simclr import preview_augment

# --------------------------------------------------------------------------------------
# The preview tool.


@pytest.fixture
def source_png(tmp_path):
    path = tmp_path / "source.png"
    Image.fromarray(uint8_images((40, 50, 3), rng_seed=8)).save(path)
    return path


def test_preview_writes_a_grid_of_distinct_views(source_png, tmp_path):
    out = tmp_path / "grid.png"
    preview_augment.FLAGS(["preview", f"--image={source_png}", f"--out={out}",
                           "--image_size=16", "--rows=2", "--cols=3", "--seed=3",
                           "--padding=2"])
    try:
        preview_augment.main(["preview"])
    finally:
        preview_augment.FLAGS.unparse_flags()
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 16 + 2, 3 * 16 + 2 * 2, 3)
    tiles = [grid[r * 18:r * 18 + 16, c * 18:c * 18 + 16].astype(int)
             for r in range(2) for c in range(3)]
    assert all(np.abs(a - b).max() > 10 for a, b in itertools.combinations(tiles, 2))
    assert np.all(grid[16:18] == 255)  # the padding between rows


@pytest.mark.parametrize("content", [None, b"this is not an image"])
def test_preview_missing_or_unreadable_image_exits_nonzero(tmp_path, content):
    image = tmp_path / "bad.png"
    if content is not None:
        image.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "tf_simclr.preview_augment", f"--image={image}",
         f"--out={tmp_path / 'grid.png'}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "error:" in result.stderr and str(image) in result.stderr
    assert not (tmp_path / "grid.png").exists()
