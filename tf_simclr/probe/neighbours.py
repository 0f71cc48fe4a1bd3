"""neighbours.png: test images, each followed by its nearest train images.

One row per query: the first test image of each class (up to `max_rows`), then
its `k` most cosine-similar train images in the representation, most similar
first. A neighbour's frame is green when it has the query's label, red when not,
so one glance tells whether the features group like with like.
"""

import numpy as np
import tensorflow as tf
from PIL import Image

from tf_simclr import augment
from tf_simclr.probe import knn

QUERY_FRAME = (60, 90, 200)
SAME_FRAME = (40, 170, 60)
OTHER_FRAME = (210, 40, 40)
FRAME = 3
GAP = 8
TILE_TARGET = 84  # pixels per tile side: small images are enlarged, large ones shrunk


def query_rows(labels, max_rows=10):
    """Indices of the first example of each class, in class order (at most max_rows)."""
    labels = np.asarray(labels)
    firsts = [int(np.argmax(labels == c)) for c in np.unique(labels)]
    return firsts[:max_rows]


def images_at(source, split, indices, image_size):
    """{index: uint8 [S, S, 3]} of the examples of `split` at `indices` (eval crop).

    One pass over the split, decoding each image; the caller bounds the split size.
    """
    wanted = tf.constant(sorted(set(int(i) for i in indices)), tf.int64)
    crop = augment.CenterCropResize(image_size)
    dataset = source.examples(split).enumerate().filter(
        lambda i, example: tf.reduce_any(tf.equal(i, wanted)))
    dataset = dataset.map(lambda i, example: (i, crop(example["image"])))
    found = {}
    for index, image in dataset.take(int(wanted.shape[0])):
        found[int(index)] = np.clip(np.round(image.numpy() * 255), 0, 255).astype(np.uint8)
    return found


def _tile(image, frame_colour, side):
    picture = Image.fromarray(image).resize((side, side), Image.NEAREST)
    tile = Image.new("RGB", (side + 2 * FRAME, side + 2 * FRAME), frame_colour)
    tile.paste(picture, (FRAME, FRAME))
    return tile


def grid(queries, query_labels, neighbours, neighbour_labels):
    """The picture: uint8 queries [Q, S, S, 3], neighbours [Q, K, S, S, 3] -> PIL image."""
    rows, k = len(queries), neighbours.shape[1]
    size = queries.shape[1]
    side = size * max(1, TILE_TARGET // size) if size <= TILE_TARGET else TILE_TARGET
    cell = side + 2 * FRAME + 2
    canvas = Image.new("RGB", (cell * (k + 1) + GAP, cell * rows), (255, 255, 255))
    for r in range(rows):
        canvas.paste(_tile(queries[r], QUERY_FRAME, side), (0, r * cell))
        for j in range(k):
            colour = SAME_FRAME if neighbour_labels[r, j] == query_labels[r] else OTHER_FRAME
            canvas.paste(_tile(neighbours[r, j], colour, side), (cell * (j + 1) + GAP, r * cell))
    return canvas


def write(path, source, config, train, test, k=8, max_rows=10):
    """Writes the picture of the stores `train`/`test` (features and labels) to `path`.

    Returns {"rows", "same_label_fraction"}: the fraction of shown neighbours that
    share their query's label.
    """
    rows = query_rows(test.labels, max_rows)
    test_features = test.features()[rows]
    _, index = knn.nearest_neighbours(train.chunks, test_features, k)
    size = config.data.image_size
    query_images = images_at(source, config.data.eval_split, rows, size)
    train_images = images_at(source, config.data.train_split, index.ravel(), size)
    queries = np.stack([query_images[i] for i in rows])
    neighbours = np.stack([[train_images[int(i)] for i in row] for row in index])
    neighbour_labels = train.labels[index]
    query_labels = test.labels[rows]
    grid(queries, query_labels, neighbours, neighbour_labels).save(path, format="PNG")
    return {"rows": len(rows),
            "same_label_fraction": float(np.mean(neighbour_labels == query_labels[:, None]))}
