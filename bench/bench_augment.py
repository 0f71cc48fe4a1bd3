"""Views/second of the SimCLR augmentation: batched layers vs the official per-image style.

Four ways to make views from the same in-memory uint8 images, in one process:

  tf.data batched  SimCLRAugment mapped over batches (dataset.batch(B).map(aug))
  direct batched   SimCLRAugment called in a tf.function on a fixed batch (device style)
  direct vectorized  the same with vectorized=True (static shapes, no per-image
                   loop: the form a TPU step compiles), in a tf.function
  tf.data per-image  the official style: a per-image dataset.map of
                   sample_distorted_bounding_box + crop + tf.image.resize(bicubic),
                   random_flip_left_right, color jitter with p=0.8 in a random order
                   dispatched by nested tf.cond, grayscale p=0.2, clip; then batch and
                   the official batch blur (one sigma per batch, p=0.5 per image)

at two presets: 32 px from 32x32 inputs, s=0.5, no blur (the README CIFAR command)
and 224 px from 256x256 inputs, s=1.0, blur on. The methods take turns for
`--rounds` rounds, since the machine may be shared; the table shows the best and
the median round. Each round of a tf.data method builds a fresh iterator and
drops it afterwards: an iterator left alive keeps prefetching in the background,
which both steals CPU from the method being timed and hands its own next round
ready-made batches. Besides wall-clock views/s, the table gives views per
CPU-second of this process (less sensitive to other jobs on a shared machine)
and the load average. Results go to bench/results/augment.json.

    TF_ENABLE_ONEDNN_OPTS=1 python bench/bench_augment.py [--iterations 10] [--rounds 3]

The last lines print batched/per-image at each size ("direct batched" is the
layer as the train step runs it; "tf.data batched" maps it over batches).
"""

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tf_simclr  # noqa: E402,F401  (sets TF_ENABLE_ONEDNN_OPTS before TF loads)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from report import cpu_info  # noqa: E402

from tf_simclr.augment import SimCLRAugment  # noqa: E402

PRESETS = {
    32: {"input_size": 32, "color_jitter_strength": 0.5, "use_blur": False, "batch_size": 256},
    224: {"input_size": 256, "color_jitter_strength": 1.0, "use_blur": True, "batch_size": 64},
}
METHODS = ("tf.data batched", "direct batched", "direct vectorized", "tf.data per-image")
NUM_SOURCE_IMAGES = 256


def official_style_views(image_size, strength, use_blur, batch_size, images):
    """The official per-image tf.data pipeline (data_util.py style), batched at the end."""
    jitter_strengths = (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)

    def random_apply(fn, probability, image):
        return tf.cond(tf.random.uniform([]) < probability, lambda: fn(image), lambda: image)

    def jitter(image):
        brightness, contrast, saturation, hue = jitter_strengths

        def apply_op(op, x):
            return tf.cond(
                op < 2,
                lambda: tf.cond(op < 1,
                                lambda: x * tf.random.uniform([], max(0.0, 1 - brightness),
                                                              1 + brightness),
                                lambda: tf.image.random_contrast(x, 1 - contrast, 1 + contrast)),
                lambda: tf.cond(op < 3,
                                lambda: tf.image.random_saturation(x, 1 - saturation,
                                                                   1 + saturation),
                                lambda: tf.image.random_hue(x, hue)))

        order = tf.random.shuffle(tf.range(4))
        for stage in range(4):
            image = tf.clip_by_value(apply_op(order[stage], image), 0.0, 1.0)
        return image

    def grayscale(image):
        return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])

    def preprocess(image):
        image = tf.image.convert_image_dtype(image, tf.float32)
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
            min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
            max_attempts=100, use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image[None], [image_size, image_size], method="bicubic")[0]
        image = tf.image.random_flip_left_right(image)
        image = random_apply(jitter, 0.8, image)
        image = random_apply(grayscale, 0.2, image)
        return tf.clip_by_value(tf.reshape(image, [image_size, image_size, 3]), 0.0, 1.0)

    def batch_blur(batch):
        radius = (image_size // 10) // 2
        positions = tf.cast(tf.range(-radius, radius + 1), tf.float32)
        sigma = tf.random.uniform([], 0.1, 2.0)
        taps = tf.exp(-positions ** 2 / (2.0 * sigma ** 2))
        taps /= tf.reduce_sum(taps)
        size = 2 * radius + 1
        blurred = tf.nn.depthwise_conv2d(batch, tf.tile(tf.reshape(taps, [1, size, 1, 1]),
                                                        [1, 1, 3, 1]), [1, 1, 1, 1], "SAME")
        blurred = tf.nn.depthwise_conv2d(blurred, tf.tile(tf.reshape(taps, [size, 1, 1, 1]),
                                                          [1, 1, 3, 1]), [1, 1, 1, 1], "SAME")
        chosen = tf.cast(tf.random.uniform([tf.shape(batch)[0], 1, 1, 1]) < 0.5, tf.float32)
        return tf.clip_by_value(blurred * chosen + batch * (1 - chosen), 0.0, 1.0)

    dataset = tf.data.Dataset.from_tensor_slices(images).repeat()
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if use_blur:
        dataset = dataset.map(batch_blur, num_parallel_calls=tf.data.AUTOTUNE)
    return iter(dataset.prefetch(tf.data.AUTOTUNE))


def batched_dataset_views(augment, batch_size, images):
    """SimCLRAugment mapped over batches, one seed per batch from its index."""
    dataset = tf.data.Dataset.from_tensor_slices(images).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=True).enumerate()
    dataset = dataset.map(
        lambda step, batch: augment(batch, seed=tf.stack([tf.constant(0, tf.int64), step])),
        num_parallel_calls=tf.data.AUTOTUNE)
    return iter(dataset.prefetch(tf.data.AUTOTUNE))


def direct_views(augment, batch_size, images):
    """SimCLRAugment in a tf.function on a batch already in memory (device style)."""
    batch = tf.constant(images[:batch_size])
    views = tf.function(lambda step: augment(batch, seed=tf.stack([0, step])))

    def next_views():
        next_views.step += 1
        return views(tf.constant(next_views.step))

    next_views.step = 0
    return next_views


def seconds_per_batch(next_batch, iterations, warmup):
    """(wall seconds, CPU seconds of this process) per batch."""
    for _ in range(warmup):
        next_batch().numpy()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        next_batch().numpy()
    return ((time.perf_counter() - start) / iterations,
            (time.process_time() - cpu_start) / iterations)


def bench_preset(image_size, batch_size, iterations, warmup, rounds):
    preset = dict(PRESETS[image_size])
    batch_size = batch_size or preset.pop("batch_size")
    preset.pop("batch_size", None)
    images = np.random.RandomState(0).randint(
        0, 256, (NUM_SOURCE_IMAGES, preset["input_size"], preset["input_size"], 3)
    ).astype(np.uint8)
    augment = SimCLRAugment(image_size, color_jitter_strength=preset["color_jitter_strength"],
                            use_blur=preset["use_blur"])
    direct = direct_views(augment, batch_size, images)
    vectorized = direct_views(
        SimCLRAugment(image_size, color_jitter_strength=preset["color_jitter_strength"],
                      use_blur=preset["use_blur"], vectorized=True), batch_size, images)
    sources = {  # fresh tf.data iterators per round (see the module docstring)
        "tf.data batched": lambda: batched_dataset_views(augment, batch_size, images).__next__,
        "direct batched": lambda: direct,
        "direct vectorized": lambda: vectorized,
        "tf.data per-image": lambda: official_style_views(
            image_size, preset["color_jitter_strength"], preset["use_blur"], batch_size,
            images).__next__,
    }
    views_per_second = {method: [] for method in METHODS}
    views_per_cpu_second = {method: [] for method in METHODS}
    loads = []
    for _ in range(rounds):
        for method in METHODS:
            next_batch = sources[method]()
            seconds, cpu_seconds = seconds_per_batch(next_batch, iterations, warmup)
            del next_batch
            gc.collect()
            views_per_second[method].append(batch_size / seconds)
            views_per_cpu_second[method].append(batch_size / cpu_seconds)
            loads.append(os.getloadavg()[0])
    return {
        "image_size": image_size, **preset, "batch_size": batch_size,
        "views_per_second": {m: {"best": max(v), "median": statistics.median(v), "rounds": v}
                             for m, v in views_per_second.items()},
        "views_per_cpu_second": {m: {"best": max(v), "median": statistics.median(v),
                                     "rounds": v} for m, v in views_per_cpu_second.items()},
        "load_average_1min": {"min": min(loads), "max": max(loads)},
    }


def machine_info():
    return {
        "cpu_model": cpu_info()["model"],
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_end": os.getloadavg(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=None,
                        help="views per batch (default: 256 at 32 px, 64 at 224 px)")
    parser.add_argument("--iterations", type=int, default=10, help="batches timed per round")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(PRESETS),
                        choices=sorted(PRESETS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "augment.json"))
    args = parser.parse_args(argv)

    results = [bench_preset(size, args.batch_size, args.iterations, args.warmup, args.rounds)
               for size in args.sizes]
    print(f"\n{'size':>5} {'method':<19} {'best views/s':>13} {'median':>9} "
          f"{'x per-image (best)':>19} {'views/CPU-s':>12} {'x per-image':>12}")
    for result in results:
        rates = result["views_per_second"]
        cpu_rates = result["views_per_cpu_second"]
        baseline = rates["tf.data per-image"]["best"]
        cpu_baseline = cpu_rates["tf.data per-image"]["best"]
        for method in METHODS:
            print(f"{result['image_size']:>5} {method:<19} {rates[method]['best']:>13.0f} "
                  f"{rates[method]['median']:>9.0f} {rates[method]['best'] / baseline:>18.2f}x "
                  f"{cpu_rates[method]['best']:>12.0f} "
                  f"{cpu_rates[method]['best'] / cpu_baseline:>11.2f}x")
        load = result["load_average_1min"]
        print(f"{result['image_size']:>5} load average (1 min) during the runs: "
              f"{load['min']:.1f}..{load['max']:.1f} on {os.cpu_count()} CPUs")
    ratios = {result["image_size"]: result["views_per_second"]["direct batched"]["best"]
              / result["views_per_second"]["tf.data per-image"]["best"] for result in results}
    for size, ratio in ratios.items():
        print(f"{size:>5} px: batched (direct) / per-image = {ratio:.2f}x")
    report = {
        "benchmark": "bench/bench_augment.py",
        "args": vars(args),
        "machine": machine_info(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "batched_over_per_image": {str(size): ratio for size, ratio in ratios.items()},
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
