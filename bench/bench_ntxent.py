"""NT-Xent forward + backward: time and peak memory per global batch (d = 128).

    .venv/bin/python bench/bench_ntxent.py [--batches 256 512 ...] [--max_2rep 8192]

Every measurement runs in a fresh subprocess, so each has its own peak RSS:
  * time: one traced warm-up call of a tf.function computing the loss and
    d loss / d (z1, z2), then `--reps` timed calls; median and min wall time.
  * peak memory: ru_maxrss after the timed calls minus ru_maxrss just before the
    first call (TensorFlow, inputs and all earlier allocations are in the
    baseline). tf.config.experimental.get_memory_info does not work on CPU. The
    allocator may reuse or keep freed pages, so treat it as an upper-bound
    estimate; the analytic column is the size of the two [N, 2N] float32 logit
    matrices the loss materialises (16 N^2 bytes), which dominates at large N.
  * 2 replicas: the same global batch split over 2 logical CPU devices under
    MirroredStrategy (both share the same 2 physical cores, so the time is not a
    speed-up measure); |loss - one-device loss| is the correctness column.
Prints a table and writes bench/results/ntxent.json.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

DIM = 128
TEMPERATURE = 0.1
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "ntxent.json")
sys.path.insert(0, HERE)
from report import write_results  # noqa: E402


def worker(batch, replicas, reps):
    """Runs in the subprocess; prints one JSON line."""
    sys.path.insert(0, os.path.dirname(HERE))
    import tf_simclr  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TF loads)
    # isort: split
    import numpy as np
    import tensorflow as tf

    from tf_simclr.train import losses

    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    rng = np.random.default_rng(0)
    z1 = rng.standard_normal((batch, DIM)).astype(np.float32)
    z2 = rng.standard_normal((batch, DIM)).astype(np.float32)

    def loss_and_grads(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss, _, _ = losses.nt_xent_loss(a, b, TEMPERATURE)
        return loss, tape.gradient(loss, [a, b])

    loss_diff = None
    if replicas == 1:
        step = tf.function(loss_and_grads)
        args = (tf.constant(z1), tf.constant(z2))
    else:
        strategy = tf.distribute.MirroredStrategy(
            [f"/cpu:{i}" for i in range(replicas)])
        shards = [np.split(z, replicas) for z in (z1, z2)]
        args = [strategy.experimental_distribute_values_from_function(
            lambda ctx, s=s: tf.constant(s[ctx.replica_id_in_sync_group]))
            for s in shards]
        step = tf.function(lambda a, b: strategy.run(loss_and_grads, args=(a, b)))

    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = step(*args)
    first_call_s = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = step(*args)
        local_results = (strategy.experimental_local_results(result) if replicas > 1
                         else [result])
        tf.nest.map_structure(lambda t: t.numpy(), local_results)  # wait for values
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if replicas > 1:
        per_replica = strategy.experimental_local_results(result)
        distributed_loss = float(np.mean([r[0].numpy() for r in per_replica]))
        single_loss = float(losses.nt_xent_loss(z1, z2, TEMPERATURE)[0])
        loss_diff = abs(distributed_loss - single_loss)
    print(json.dumps({
        "global_batch": batch, "replicas": replicas,
        "first_call_s": first_call_s, "median_s": statistics.median(times),
        "min_s": min(times), "reps": reps,
        "peak_rss_mib": peak_kib / 1024, "peak_rss_delta_mib": (peak_kib - baseline_kib) / 1024,
        "abs_loss_diff_vs_one_device": loss_diff,
        "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }))


def run_worker(batch, replicas, reps):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", "--batch", str(batch),
         "--replicas", str(replicas), "--reps", str(reps)],
        check=True, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+",
                        default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--max_2rep", type=int, default=8192,
                        help="largest global batch also run on 2 replicas")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--replicas", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch, args.replicas, args.reps)
        return

    rows = []
    load_before = os.getloadavg()
    for batch in args.batches:
        one = run_worker(batch, 1, args.reps)
        two = run_worker(batch, 2, args.reps) if batch <= args.max_2rep else None
        rows.append({
            "global_batch": batch,
            "logits_mib_analytic": 2 * batch * 2 * batch * 4 / 2**20,
            "one_device": one,
            "two_replicas": two,
        })
        print(f"done N={batch}", file=sys.stderr, flush=True)

    header = (f"{'N':>5} | {'1 dev ms (min)':>15} | {'peak RSS +MiB':>13} | "
              f"{'logits MiB':>10} | {'2 rep ms':>9} | {'2 rep +MiB':>10} | {'|dloss|':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        one, two = row["one_device"], row["two_replicas"]
        two_cols = (f"{1e3 * two['median_s']:9.1f} | {two['peak_rss_delta_mib']:10.0f} | "
                    f"{two['abs_loss_diff_vs_one_device']:8.1e}" if two else
                    f"{'-':>9} | {'-':>10} | {'-':>8}")
        median_ms, min_ms = 1e3 * one["median_s"], 1e3 * one["min_s"]
        print(f"{row['global_batch']:>5} | {median_ms:7.1f} ({min_ms:5.1f}) | "
              f"{one['peak_rss_delta_mib']:13.0f} | {row['logits_mib_analytic']:10.0f} | "
              f"{two_cols}")

    write_results(RESULTS, {
        "benchmark": "nt_xent_loss forward + backward w.r.t. z1, z2",
        "dim": DIM, "temperature": TEMPERATURE,
        "method": {
            "time": f"tf.function, 1 traced warm-up call, median/min of {args.reps} calls",
            "peak_rss_delta_mib": "ru_maxrss after the timed calls minus ru_maxrss "
                                  "before the first call, one subprocess per row",
            "logits_mib_analytic": "two [N, 2N] float32 logit matrices = 16 N^2 bytes",
            "two_replicas": "MirroredStrategy over 2 logical devices of the same CPU",
        },
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(),
                 "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                 "tensorflow": rows[0]["one_device"]["tensorflow"],
                 "TF_ENABLE_ONEDNN_OPTS": rows[0]["one_device"]["onednn"]},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
