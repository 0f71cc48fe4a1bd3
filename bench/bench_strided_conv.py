"""Strided 1x1 convolution, forward + backward: plain vs subsampled (the oneDNN workaround).

    .venv/bin/python bench/bench_strided_conv.py [--repeats 20]

The ResNet's shortcut projections (1x1, stride 2) run as x[:, ::2, ::2, :] followed by
a stride-1 1x1 convolution (layers.SubsampledPointwiseConv2D), because TensorFlow
2.21's oneDNN backward of the strided kernel corrupts the heap on AVX-512 CPUs. This
times both at the shortcut shapes of the presets' networks at their training batch
(two views per image), with oneDNN on and off (each setting in its own process, each
case in a forked child so a crash of the plain kernel is a table entry):
  * step: a tf.function computing y = conv(x), then d sum(y^2) / d x and d / d w;
  * time: median wall time of --repeats calls after two warm-up calls.
Prints a table and writes bench/results/strided_conv.json.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "strided_conv.json")
sys.path.insert(0, HERE)
from report import write_results  # noqa: E402

# name -> (batch, height, width, in channels, out channels): the stride-2 shortcuts
CASES = {
    "quickstart r18 1/8x 28px, group2": (512, 28, 28, 8, 16),
    "quickstart r18 1/8x 28px, group3": (512, 14, 14, 16, 32),
    "quickstart r18 1/8x 28px, group4": (512, 7, 7, 32, 64),
    "cifar r18 1x 32px, group2": (128, 32, 32, 64, 128),
    "cifar r18 1x 32px, group4": (128, 8, 8, 256, 512),
    "imagenet r50 1x 224px, group2": (16, 56, 56, 256, 512),
    "imagenet r50 1x 224px, group3": (16, 28, 28, 512, 1024),
    "imagenet r50 1x 224px, group4": (16, 14, 14, 1024, 2048),
}
VARIANTS = ("plain", "subsampled")


def time_case(shape, variant, repeats):
    """Median seconds of one forward + backward call."""
    import numpy as np
    import tensorflow as tf

    from tf_simclr.models.layers import SubsampledPointwiseConv2D

    batch, height, width, cin, cout = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, height, width, cin)), tf.float32)
    layer = SubsampledPointwiseConv2D(cout, 1, strides=2, padding="valid", use_bias=False)
    layer.build((None, None, None, cin))
    kernel = tf.constant(layer.kernel.numpy())

    @tf.function
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            if variant == "plain":
                y = tf.nn.conv2d(x, w, strides=2, padding="VALID")
            else:
                y = layer.convolution_op(x, w)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, w])

    for _ in range(2):
        [g.numpy() for g in step(x, kernel)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        [g.numpy() for g in step(x, kernel)]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_forked(shape, variant, repeats):
    """time_case in a forked child -> seconds, or the signal that killed it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.write(write_fd, json.dumps(time_case(shape, variant, repeats)).encode())
        os._exit(0)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pipe.read()
    if os.WIFSIGNALED(status):
        return f"crash (signal {os.WTERMSIG(status)})"
    return json.loads(payload)


def measure(repeats):
    """{case: {variant: seconds or crash}} under this process's TF_ENABLE_ONEDNN_OPTS."""
    import tensorflow  # noqa: F401  imported before forking, no op run here

    import tf_simclr.models.layers  # noqa: F401
    return {name: {variant: run_forked(shape, variant, repeats) for variant in VARIANTS}
            for name, shape in CASES.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats)))
        return 0

    results = {}
    for onednn in ("1", "0"):
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2")
        child = subprocess.run([sys.executable, __file__, "--child", f"--repeats={args.repeats}"],
                               env=env, capture_output=True, text=True, check=True)
        results[onednn] = json.loads(child.stdout.strip().splitlines()[-1])

    def cell(value):
        return value if isinstance(value, str) else f"{value * 1e3:.2f}"

    def ratio(plain, subsampled):
        if isinstance(plain, str) or isinstance(subsampled, str):
            return "-"
        return f"{plain / subsampled:.2f}x"

    lines = ["| shortcut (batch, HxWxC -> F) | oneDNN on: plain ms | subsampled ms | speed-up "
             "| oneDNN off: plain ms | subsampled ms | speed-up |", "|---|---|---|---|---|---|---|"]
    for name, (batch, height, width, cin, cout) in CASES.items():
        row = [f"{name} ({batch}, {height}x{width}x{cin} -> {cout})"]
        for onednn in ("1", "0"):
            plain, subsampled = (results[onednn][name][v] for v in VARIANTS)
            row += [cell(plain), cell(subsampled), ratio(plain, subsampled)]
        lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    print(table)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f}; {platform.processor() or platform.machine()}")
    write_results(RESULTS, dict(repeats=args.repeats, load_average=load, cases=CASES,
                                seconds=results, table=table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
