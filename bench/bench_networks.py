"""ResNet encoders, forward + backward: images/second and share of the CPU's peak FLOP/s.

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python bench/bench_networks.py [--only r18_cifar ...]
        [--seconds 12]

Every row runs in a fresh subprocess (own peak RSS, no allocator left-overs):
  * step: a tf.function computing d loss / d (encoder trainable variables) of
    loss = mean(final_avg_pool ** 2) with the encoder called with training=True
    (BN on batch statistics, moving averages updated). No optimizer update, no
    projection head: the encoder is > 99% of SimCLR's compute. One device,
    global_bn=False (synchronized BN only matters under a strategy).
  * time: the first call (trace + run) is the warm-up; then calls are timed until
    --seconds have passed (at least 2). images/s = batch / median wall time.
  * CPU time: user + system seconds of the worker over the timed calls, per image.
    On a shared machine the wall time depends on the other jobs; "img/s if alone"
    = cores / (CPU seconds per image) is what all cores would give at the same
    per-core efficiency (an estimate: it ignores thread scaling losses).
  * FLOPs: tf.profiler float_operation count of the forward graph at batch 1
    (training=False, variables frozen to constants; counts 2 FLOPs per MAC).
    A training step is taken as 3x forward (forward + grad w.r.t. inputs +
    grad w.r.t. weights), the usual estimate.
  * peak: cores x GHz x 32 FP32 FLOPs/cycle (two 256-bit FMA units, AVX2), with
    the cores and the clock ("cpu MHz") read from /proc/cpuinfo. The share is
    achieved (3 x forward FLOPs x images/s) / peak.
  * memory: ru_maxrss of the worker after the timed calls (whole process).
Batches are chosen to stay well below 24 GiB (see the peak RSS column), so other
jobs on the machine keep their memory. The machine may be shared: the load
average before and after is recorded, and a busy machine lowers every number.
Prints a table and writes bench/results/networks.json.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "networks.json")
sys.path.insert(0, HERE)
from report import cpu_info, machine, write_results  # noqa: E402

FP32_FLOPS_PER_CYCLE = 32  # AVX2: 2 FMA units x 8 floats x 2 FLOPs

# name -> ResNet kwargs, image size, batch
CONFIGS = {
    "r18_1x_cifar32": (dict(depth=18, cifar_stem=True), 32, 128),
    "r50_1x_224": (dict(depth=50), 224, 8),
    "r50_1x_128": (dict(depth=50), 128, 16),
    "r50_0.5x_224": (dict(depth=50, width_multiplier=0.5), 224, 16),
    "r50_0.25x_224": (dict(depth=50, width_multiplier=0.25), 224, 32),
    "r50_1x_sk_128": (dict(depth=50, sk_ratio=0.0625), 128, 16),
}


def forward_flops(model, size):
    """FLOPs of one image through the encoder (training=False), from tf.profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(lambda x: model(x, training=False)["final_avg_pool"])
    concrete = function.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops


def worker(name, seconds):
    """Runs in the subprocess; prints one JSON line."""
    sys.path.insert(0, os.path.dirname(HERE))
    import tf_simclr  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TF loads)
    # isort: split
    import keras
    import tensorflow as tf

    from tf_simclr.models.resnet import ResNet

    kwargs, size, batch = CONFIGS[name]
    keras.utils.set_random_seed(0)
    model = ResNet(global_bn=False, **kwargs)
    model.build((None, size, size, 3))
    variables = model.trainable_variables
    images = tf.random.uniform((batch, size, size, 3), seed=0)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            features = model(x, training=True)["final_avg_pool"]
            loss = tf.reduce_mean(features ** 2)
        return loss, tape.gradient(loss, variables)

    start = time.perf_counter()
    step(images)[0].numpy()
    first_call_s = time.perf_counter() - start
    times = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    begin = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - begin < seconds:
        start = time.perf_counter()
        step(images)[0].numpy()  # the loss waits for every gradient of the step
        times.append(time.perf_counter() - start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s_per_image = (usage.ru_utime + usage.ru_stime - cpu_before) / (batch * len(times))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flops = forward_flops(model, size)
    print(json.dumps({
        "name": name, "resnet": kwargs, "image_size": size, "batch": batch,
        "params": sum(int(tf.size(v)) for v in model.trainable_variables),
        "first_call_s": first_call_s, "median_step_s": statistics.median(times),
        "min_step_s": min(times), "steps_timed": len(times),
        "images_per_s": batch / statistics.median(times),
        "cpu_s_per_image": cpu_s_per_image,
        "forward_gflops_per_image": flops / 1e9,
        "peak_rss_gib": peak_kib / 2**20,
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }))


def run_worker(name, seconds):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", name,
         "--seconds", str(seconds)],
        check=True, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="minimum timed seconds per row (after 1 warm-up call)")
    parser.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.seconds)
        return

    cpu = cpu_info()
    peak_gflops = (cpu["logical_cpus"] * cpu["ghz"] * FP32_FLOPS_PER_CYCLE
                   if cpu["ghz"] else None)
    load_before = os.getloadavg()
    rows = []
    for name in args.only:
        row = run_worker(name, args.seconds)
        row["train_gflops_per_image"] = 3 * row["forward_gflops_per_image"]
        row["achieved_gflops"] = row["train_gflops_per_image"] * row["images_per_s"]
        row["share_of_peak"] = row["achieved_gflops"] / peak_gflops if peak_gflops else None
        row["images_per_s_if_alone"] = cpu["logical_cpus"] / row["cpu_s_per_image"]
        row["share_of_peak_if_alone"] = (
            row["train_gflops_per_image"] * row["images_per_s_if_alone"] / peak_gflops
            if peak_gflops else None)
        rows.append(row)
        print(f"done {name}", file=sys.stderr, flush=True)

    header = (f"{'network':<15} | {'px':>3} | {'batch':>5} | {'params M':>8} | "
              f"{'img/s':>7} | {'step s':>6} | {'fwd GFLOP':>9} | {'GFLOP/s':>7} | "
              f"{'% peak':>6} | {'alone img/s':>11} | {'% peak':>6} | {'RSS GiB':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        share = f"{100 * row['share_of_peak']:6.1f}" if row["share_of_peak"] else f"{'-':>6}"
        alone = (f"{100 * row['share_of_peak_if_alone']:6.1f}"
                 if row["share_of_peak_if_alone"] else f"{'-':>6}")
        print(f"{row['name']:<15} | {row['image_size']:>3} | {row['batch']:>5} | "
              f"{row['params'] / 1e6:8.2f} | {row['images_per_s']:7.2f} | "
              f"{row['median_step_s']:6.2f} | {row['forward_gflops_per_image']:9.3f} | "
              f"{row['achieved_gflops']:7.1f} | {share} | "
              f"{row['images_per_s_if_alone']:11.2f} | {alone} | {row['peak_rss_gib']:7.2f}")
    load_after = os.getloadavg()
    print(f"CPU {cpu['model']}, {cpu['logical_cpus']} cores at {cpu['ghz']} GHz: peak "
          f"{peak_gflops:.1f} GFLOP/s fp32; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; TF_ENABLE_ONEDNN_OPTS={rows[0]['TF_ENABLE_ONEDNN_OPTS']}")

    write_results(RESULTS, {
        "benchmark": "ResNet encoder forward + backward (grads of all trainable "
                     "variables), training=True, one device, float32",
        "method": {
            "time": "tf.function; 1 warm-up call (trace); median of calls over >= "
                    f"{args.seconds} s; images/s = batch / median step",
            "if_alone": "logical cpus / (worker user+sys CPU seconds per image over "
                        "the timed calls): an estimate for an otherwise idle machine",
            "flops": "tf.profiler float_operation of the batch-1 forward graph "
                     "(2 FLOPs per MAC); training step = 3 x forward",
            "peak": f"logical cpus x GHz ('cpu MHz') x {FP32_FLOPS_PER_CYCLE} "
                    "FP32 FLOPs/cycle (AVX2 FMA)",
            "peak_rss_gib": "ru_maxrss of the worker process, one subprocess per row",
        },
        "machine": machine(cpu, rows, load_before, load_after,
                           peak_gflops_fp32=peak_gflops,
                           TF_ENABLE_ONEDNN_OPTS=rows[0]["TF_ENABLE_ONEDNN_OPTS"]),
        "rows": rows,
    })


if __name__ == "__main__":
    main()
