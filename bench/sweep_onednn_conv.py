"""Which convolutions crash or go wrong under oneDNN: the shapes tf_simclr's ResNets use.

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python bench/sweep_onednn_conv.py [--jobs 2]
        [--batches 1-17] [--widths 0.125,0.25,0.5,1,2,4] [--max-case-gflop 4]

TensorFlow 2.21's oneDNN backward of a strided 1x1 convolution corrupts the heap on
AVX-512 CPUs for some shapes (issue: odd batches crash training). This script finds
the extent over what the project runs:
  * shapes: every Conv2D call of the ResNets of the presets (depth 18 with the CIFAR
    stem at 28 and 32 px, with the ImageNet stem at 96 and 224 px; depth 50 at 32 and
    224 px, with and without SK), at each width of --widths, recorded from a forward
    pass (input shape after the fixed padding, filters, kernel, stride, padding).
    Depths 34 and 101-200 repeat the shapes of 18 and 50.
  * variants: "plain" is tf.nn.conv2d with the layer's kernel and stride, what a Keras
    Conv2D would run; "tf_simclr" is the layer class the project builds (for strided
    1x1 convolutions SubsampledPointwiseConv2D, otherwise the same as plain).
  * each case (shape x batch x variant) runs forward and backward (d/dx and d/dw of
    sum(y^2)) in its own forked child process, so a crash is a result, not a dead
    sweep; the child compares y, dx and dw with the same computation in float64, which
    TensorFlow runs with its Eigen kernels (oneDNN has no float64 convolutions), i.e.
    the oneDNN-off result at higher precision. "differ" = max|a - ref| / max|ref| > 1e-3.
  * batches: --batches for every shape; a case above --max-case-gflop (forward
    multiply-adds x 2 of the batch) runs only at the batches of LARGE_CASE_BATCHES, so
    the wide networks at 224 px stay affordable on 2 cores (their float64 reference
    is the cost).
Prints a table (shapes that crash or differ, per variant) and writes
bench/results/sweep_onednn_conv.json with every case.
"""

import argparse
import itertools
import json
import os
import platform
import select
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "sweep_onednn_conv.json")
sys.path.insert(0, HERE)
from report import write_results  # noqa: E402

RELATIVE_TOLERANCE = 1e-3
LARGE_CASE_BATCHES = (1, 2, 3, 4, 5)

# name -> ResNet kwargs and image size, the presets' architectures
ARCHITECTURES = {
    "r18_cifar28": (dict(depth=18, cifar_stem=True), 28),
    "r18_cifar32": (dict(depth=18, cifar_stem=True), 32),
    "r18_96": (dict(depth=18), 96),
    "r18_224": (dict(depth=18), 224),
    "r50_cifar32": (dict(depth=50, cifar_stem=True), 32),
    "r50_224": (dict(depth=50), 224),
    "r50_sk_224": (dict(depth=50, sk_ratio=0.0625), 224),
}


def parse_batches(text):
    """'1-17' or '1,3,5' -> sorted list of ints."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return sorted(int(b) for b in text.split(","))


def record_conv_shapes(widths):
    """Every distinct Conv2D call of ARCHITECTURES at `widths`, as dicts with the layer
    class, input height/width/cin, filters, kernel, strides, padding and the archs."""
    import keras
    import tensorflow as tf

    from tf_simclr.models.resnet import ResNet

    shapes = {}
    current = []
    original_call = keras.layers.Conv2D.call

    def recording_call(layer, inputs):
        _, height, width, cin = inputs.shape
        key = (type(layer).__name__, height, width, cin, layer.filters, layer.kernel_size[0],
               layer.strides[0], layer.padding)
        shapes.setdefault(key, set()).add(current[0])
        return original_call(layer, inputs)

    keras.layers.Conv2D.call = recording_call
    try:
        for (name, (kwargs, size)), width in itertools.product(ARCHITECTURES.items(), widths):
            current[:] = [f"{name}_w{width:g}"]
            model = ResNet(width_multiplier=width, **kwargs)
            model(tf.zeros([1, size, size, 3]), training=False)
    finally:
        keras.layers.Conv2D.call = original_call
    fields = ("layer", "height", "width", "cin", "filters", "kernel", "strides", "padding")
    return [dict(zip(fields, key), archs=sorted(archs)) for key, archs in sorted(shapes.items())]


def forward_gflop(shape, batch):
    out_h = -(-shape["height"] // shape["strides"])
    out_w = -(-shape["width"] // shape["strides"])
    macs = batch * out_h * out_w * shape["filters"] * shape["cin"] * shape["kernel"] ** 2
    return 2 * macs / 1e9


def run_case(shape, batch, variant):
    """Forward + backward of one convolution in float32 and float64 -> max relative error."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tf_simclr.models import layers

    rng = np.random.default_rng(batch)
    images = rng.standard_normal((batch, shape["height"], shape["width"], shape["cin"]))
    kernel = rng.standard_normal((shape["kernel"], shape["kernel"], shape["cin"],
                                  shape["filters"]))
    layer_class = getattr(layers, shape["layer"], keras.layers.Conv2D)
    results = []
    for dtype in ("float32", "float64"):
        x = tf.constant(images, dtype)
        w = tf.constant(kernel, dtype)
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            if variant == "plain":
                y = tf.nn.conv2d(x, w, strides=shape["strides"],
                                 padding=shape["padding"].upper())
            else:
                layer = layer_class(shape["filters"], shape["kernel"], strides=shape["strides"],
                                    padding=shape["padding"], use_bias=False, dtype=dtype)
                y = layer.convolution_op(x, w)
            loss = tf.reduce_sum(y * y)
        results.append([t.numpy().astype(np.float64) for t in [y, *tape.gradient(loss, [x, w])]])
    return max(float(np.max(np.abs(a - r)) / (np.max(np.abs(r)) + 1e-30))
               for a, r in zip(*results))


def sweep(cases, jobs):
    """Runs each case in a forked child, at most `jobs` at once -> list of result dicts."""
    pending = list(enumerate(cases))
    running = {}  # pid -> (index, read end of the pipe)
    results = [None] * len(cases)
    started = time.time()
    done = 0
    while pending or running:
        while pending and len(running) < jobs:
            index, (shape, batch, variant) = pending.pop(0)
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                try:
                    message = json.dumps({"error": run_case(shape, batch, variant)})
                    code = 0
                except Exception as exc:  # a Python-level failure is a result too
                    message = json.dumps({"exception": f"{type(exc).__name__}: {exc}"})
                    code = 1
                os.write(write_fd, message.encode())
                os._exit(code)
            os.close(write_fd)
            running[pid] = (index, read_fd)
        pid, status = os.wait()
        index, read_fd = running.pop(pid)
        chunks = []
        while select.select([read_fd], [], [], 0)[0]:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_fd)
        shape, batch, variant = cases[index]
        row = dict(shape, batch=batch, variant=variant)
        if os.WIFSIGNALED(status):
            row["outcome"] = f"crash (signal {os.WTERMSIG(status)})"
        else:
            payload = json.loads(b"".join(chunks) or b'{"exception": "no result"}')
            if "exception" in payload:
                row["outcome"] = "exception: " + payload["exception"]
            else:
                row["max_rel_error"] = payload["error"]
                row["outcome"] = "differ" if payload["error"] > RELATIVE_TOLERANCE else "ok"
        results[index] = row
        done += 1
        if done % 200 == 0 or done == len(cases):
            elapsed = time.time() - started
            print(f"  {done}/{len(cases)} cases, {elapsed:.0f} s, "
                  f"ETA {elapsed / done * (len(cases) - done):.0f} s", flush=True)
    return results


def shape_label(row):
    return (f"{row['kernel']}x{row['kernel']}/{row['strides']} {row['padding']} "
            f"{row['height']}x{row['width']}x{row['cin']} -> {row['filters']}")


def summarize(results):
    """Markdown table: per variant, the shapes with failures and at which batches."""
    lines = ["| variant | conv (k/s padding, input HxWxC -> F) | failing batches | outcome |",
             "|---|---|---|---|"]
    failing = {}
    for row in results:
        if row["outcome"] != "ok":
            key = (row["variant"], shape_label(row))
            failing.setdefault(key, []).append((row["batch"], row["outcome"]))
    for (variant, label), failures in sorted(failing.items()):
        outcomes = sorted({outcome.split(" (")[0] for _, outcome in failures})
        batches = ",".join(str(b) for b, _ in sorted(failures))
        lines.append(f"| {variant} | {label} | {batches} | {'/'.join(outcomes)} |")
    totals = []
    for variant in ("plain", "tf_simclr"):
        rows = [r for r in results if r["variant"] == variant]
        bad = [r for r in rows if r["outcome"] != "ok"]
        shapes = {shape_label(r) for r in rows}
        totals.append(f"{variant}: {len(bad)} of {len(rows)} cases fail "
                      f"({len({shape_label(r) for r in bad})} of {len(shapes)} shapes)")
    return "\n".join(lines), totals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--batches", default="1-17")
    parser.add_argument("--widths", default="0.125,0.25,0.5,1,2,4")
    parser.add_argument("--max-case-gflop", type=float, default=4.0)
    args = parser.parse_args()
    widths = [float(w) for w in args.widths.split(",")]
    batches = parse_batches(args.batches)

    # The shapes are recorded in a child so that this process never runs a TensorFlow
    # op: forking after TensorFlow has started its thread pools is not safe.
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        with os.fdopen(write_fd, "w") as pipe:
            json.dump(record_conv_shapes(widths), pipe)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        shapes = json.load(pipe)
    os.waitpid(pid, 0)

    cases = []
    for shape in shapes:
        variants = ["plain", "tf_simclr"] if shape["layer"] != "Conv2D" else ["plain"]
        for batch in batches:
            if (forward_gflop(shape, batch) > args.max_case_gflop
                    and batch not in LARGE_CASE_BATCHES):
                continue
            cases.extend((shape, batch, variant) for variant in variants)
    print(f"{len(shapes)} distinct convolutions, {len(cases)} cases, {args.jobs} at a time",
          flush=True)
    # Imported once here (no op runs in this process) so each forked case starts at once.
    import keras  # noqa: F401
    import tensorflow as tf

    import tf_simclr.models.resnet  # noqa: F401

    started = time.time()
    results = sweep(cases, args.jobs)
    table, totals = summarize(results)
    # Plain and project variants are the same op for non-subsampled layers, so the
    # tf_simclr total counts those shapes through their plain rows.
    project = [r for r in results
               if r["variant"] == "tf_simclr" or r["layer"] == "Conv2D"]
    project_bad = [r for r in project if r["outcome"] != "ok"]
    totals.append(f"as tf_simclr runs them (every layer): {len(project_bad)} of "
                  f"{len(project)} cases fail")
    flags = sorted({f for line in open("/proc/cpuinfo") if line.startswith("flags")
                    for f in line.split()[2:] if f in ("avx2", "avx512f", "avx512_bf16")})
    print(table)
    print("\n".join(totals))
    print(f"max relative error of the cases that ran: "
          f"{max(r.get('max_rel_error', 0.0) for r in results):.1e}; "
          f"{time.time() - started:.0f} s; cpu flags {' '.join(flags)}")
    write_results(RESULTS, dict(
        machine=platform.processor() or platform.machine(), cpu_flags=flags,
        tensorflow=tf.__version__, onednn=os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(default)"),
        widths=widths, batches=batches, max_case_gflop=args.max_case_gflop,
        totals=totals, table=table, cases=results))


if __name__ == "__main__":
    sys.exit(main())
