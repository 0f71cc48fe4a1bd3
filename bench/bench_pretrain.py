"""SimCLR pretraining end to end (input pipeline + train step): images/s and share of peak.

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python bench/bench_pretrain.py [--quick] [--full]
        [--only r18_cifar32 r50_224]

What runs. The library's own training loop, unchanged: `tf_simclr.train.trainer.TrainState`
and `Trainer(state, source).run()` on the default OneDeviceStrategy, pretraining
(LARS, NT-Xent, the online linear head of lineareval_while_pretraining) from an
in-memory source of random uint8 images (`InMemorySource` below; no files are
read, so the input cost is augmentation + batching only). Every row is a fresh
child process (this script with --child SPEC): oneDNN and XLA are chosen by
environment variables that TensorFlow reads when it loads, so they cannot change
within one process. The parent never imports TensorFlow; it runs the rows one
after the other, on the same machine in the same invocation, and compares each
row with its network's baseline row.

Networks (official per-resolution settings):
  * r18_cifar32: ResNet-18, CIFAR stem, 32 px source images, no blur, batch 64.
  * r50_224: ResNet-50, 224 px crops of 256 x 256 source images, blur, batch 8.
  Each image gives two augmented views, so one step runs 2 x batch images through
  the network; images/s counts images (not views).

Variants, each against the baseline (input on host, oneDNN on, no XLA):
  * input "device": --augment_on=device (the same augmentation inside the step).
  * oneDNN off: TF_ENABLE_ONEDNN_OPTS=0 (checked in the child with IsMklEnabled).
  * XLA: TF_XLA_FLAGS="--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit" (auto-clustering
    of the train loop's tf.function; on CPU, auto_jit alone does nothing). The
    augmentation is already XLA (jit_compile=True) in every row, so "XLA compiles"
    counts the child's XLA compilations (from TF's device_compiler log) and an
    XLA row only compiled the step if it has more of them than the baseline. A row
    whose child fails is reported with the error ("where it compiles").
  --full runs all 8 combinations per network instead of one factor at a time.

Timing. steps_per_loop=1, so every step is one call of the library's loop
tf.function and one `trainer.history` entry; the child replaces `trainer.history`
(a list the trainer appends to after each loop) by a list that also records
time.perf_counter() and the process's CPU seconds at each append. The first
--warmup steps (the first one traces and compiles) are not timed; the step time is
the median of the following --timed intervals between appends, and images/s =
batch / median step. An interval includes everything the trainer does per loop
(next batch, step, the finite-loss check, the progress line, TensorBoard scalars):
end to end. The single checkpoint (checkpoint_steps = train_steps) is written
after the last append and is not timed. "first loop s" is the time from
Trainer.run() to the first append: dataset creation, tracing, compilation and the
first step.

Shared machine. Other jobs may run; the load average before and after the whole
run and before each row is recorded, and "CPU util" is the child's CPU seconds /
wall seconds over the timed steps (2.0 = both cores). "alone img/s" = cores /
(CPU seconds per image) estimates an idle machine at the same per-core
efficiency (it ignores thread scaling losses), as in bench_networks.py.

FLOPs and peak (bench_networks.py's method, imported from it): tf.profiler
float_operation count of the encoder's forward graph at batch 1 (2 FLOPs per MAC),
counted once per network in its baseline row; a step is 3 x forward per view and 2
views per image (the projection/linear heads and the loss add < 0.3% and are not
counted). Peak = logical cores x GHz ("cpu MHz") x 32 FP32 FLOPs/cycle (AVX2 FMA).
Share of peak = 6 x forward FLOPs x images/s / peak.

Prints a table and writes bench/results/pretrain.json.
"""

import argparse
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "pretrain.json")
sys.path.insert(0, HERE)
from bench_networks import FP32_FLOPS_PER_CYCLE, forward_flops  # noqa: E402
from report import cpu_info, machine, machine_line, write_results  # noqa: E402

VIEWS = 2
TRAIN_PASSES_PER_FORWARD = 3  # forward + grad w.r.t. inputs + grad w.r.t. weights
XLA_FLAGS = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"
CHILD_TIMEOUT_S = 1200

# name -> network settings; (batch, warm-up steps, timed steps) normal and --quick.
NETWORKS = {
    "r18_cifar32": dict(resnet_depth=18, image_size=32, source_size=32, use_blur=False,
                        num_classes=10, run=(64, 1, 3), quick=(32, 1, 2)),
    "r50_224": dict(resnet_depth=50, image_size=224, source_size=256, use_blur=True,
                    num_classes=1000, run=(8, 1, 2), quick=(4, 1, 2)),
}
BASELINE = dict(augment_on="host", onednn=True, xla=False)


def variants(full):
    """The baseline first, then one factor changed at a time (or all combinations)."""
    if full:
        rows = [dict(augment_on=a, onednn=o, xla=x) for a, o, x in itertools.product(
            ("host", "device"), (True, False), (False, True))]
        return sorted(rows, key=lambda v: v != BASELINE)
    return [BASELINE, dict(BASELINE, augment_on="device"), dict(BASELINE, onednn=False),
            dict(BASELINE, xla=True)]


# -- child ------------------------------------------------------------------------

def quickstart_config(model_dir, steps, **changes):
    """flags/quickstart.cfg, read by the command line's own flag definitions, changed only
    where a train-only run of `steps` steps on InMemorySource must differ, then by
    `changes` (e.g. steps_per_loop, deterministic)."""
    from absl import flags

    from tf_simclr import run

    values = flags.FlagValues()
    run.define_flags(values)
    values(["bench", f"--flagfile={os.path.join(REPO, 'flags', 'quickstart.cfg')}",
            f"--model_dir={model_dir}"])
    return run.config_from_flags(values).replace(
        dataset="in_memory", train_split="train", eval_split="", mode="train", probe="none",
        knn_monitor_epochs=0, train_steps=steps, checkpoint_steps=steps,
        keep_checkpoint_max=1, keep_hub_module_max=0, **changes).validate()


class InMemorySource:
    """An ImageSource over random uint8 arrays held in memory (the tests' idea).

    Smooth-ish random images whose mean colour depends on the label; every input
    pipeline reads its contiguous shard.
    """

    def __init__(self, num_train, size, num_classes, seed=0):
        import numpy as np

        from tf_simclr.data import DatasetInfo
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, num_classes, num_train).astype(np.int32)
        noise = rng.normal(0, 40, (num_train, size, size, 3))
        base = (labels[:, None, None, None] % 4 * 50 + 50).astype(float)
        self._images = np.clip(base + noise, 0, 255).astype(np.uint8)
        self._labels = labels
        self.info = DatasetInfo(name="in_memory", num_classes=num_classes,
                                num_train_examples=num_train, num_eval_examples=0,
                                image_shape=(size, size, 3))

    def examples(self, split, input_context=None, shuffle_files=False, seed=None):
        del shuffle_files, seed
        import numpy as np
        import tensorflow as tf
        if split != "train":
            raise ValueError(f"InMemorySource has only a 'train' split; got {split!r}")
        images, labels = self._images, self._labels
        if input_context is not None and input_context.num_input_pipelines > 1:
            part = np.array_split(np.arange(len(images)),
                                  input_context.num_input_pipelines)[
                                      input_context.input_pipeline_id]
            images, labels = images[part], labels[part]
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


class TimedHistory(list):
    """trainer.history that also records (wall, CPU seconds) at every append."""

    def __init__(self):
        super().__init__()
        self.marks = []

    def append(self, item):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.marks.append((time.perf_counter(), usage.ru_utime + usage.ru_stime))
        super().append(item)


def child(spec):
    """Runs one row in this (fresh) process; prints one JSON line."""
    sys.path.insert(0, REPO)
    import tf_simclr  # noqa: F401  (environment defaults before TensorFlow loads)
    # isort: split
    import keras
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from tf_simclr import config as config_lib
    from tf_simclr.train import strategy as strategy_lib
    from tf_simclr.train import trainer as trainer_lib

    net = NETWORKS[spec["network"]]
    batch, warmup, timed = spec["batch"], spec["warmup"], spec["timed"]
    steps = warmup + timed
    # No keras.utils.set_random_seed(0): a global TF seed of 0 breaks the input
    # pipeline's per-epoch shuffle (see the report); weights and augmentation are
    # seeded by config.train.seed anyway.
    source = InMemorySource(num_train=4 * batch, size=net["source_size"],
                            num_classes=net["num_classes"])
    with tempfile.TemporaryDirectory(prefix="bench_pretrain_") as model_dir:
        config = config_lib.Config().replace(
            dataset="in_memory", train_split="train", image_size=net["image_size"],
            resnet_depth=net["resnet_depth"], width_multiplier=1.0,
            train_batch_size=batch, train_steps=steps, checkpoint_steps=steps,
            steps_per_loop=1, keep_checkpoint_max=1, keep_hub_module_max=0,
            augment_on=spec["augment_on"], use_blur=net["use_blur"],
            model_dir=model_dir).validate()
        strategy = strategy_lib.make_strategy(config.hardware)
        state = trainer_lib.TrainState(config, strategy, source.info.num_classes,
                                       source.info.num_train_examples)
        trainer = trainer_lib.Trainer(state, source)
        trainer.history = TimedHistory()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        start = (time.perf_counter(), usage.ru_utime + usage.ru_stime)
        trainer.run()
        marks = [start] + trainer.history.marks
        if len(marks) != steps + 1 or state.step != steps:
            raise RuntimeError(f"expected {steps} loops of 1 step, got {len(marks) - 1} "
                               f"loops ending at step {state.step}")
        last_metrics = trainer.history[-1][1]
        flops = forward_flops(state.model.encoder, net["image_size"]) if spec["flops"] else None

    step_s = [marks[i + 1][0] - marks[i][0] for i in range(warmup, steps)]
    wall = marks[-1][0] - marks[warmup][0]
    cpu = marks[-1][1] - marks[warmup][1]
    print(json.dumps({
        "first_loop_s": marks[1][0] - marks[0][0],
        "warmup_steps": warmup, "timed_steps": timed, "step_s": step_s,
        "median_step_s": statistics.median(step_s),
        "images_per_s": batch / statistics.median(step_s),
        "cpu_util": cpu / wall, "cpu_s_per_image": cpu / (batch * timed),
        "forward_gflops_per_image": flops / 1e9 if flops else None,
        "params": sum(int(tf.size(v)) for v in state.model.trainable_variables),
        "total_loss_last": last_metrics["total_loss"],
        "onednn_enabled": bool(_pywrap_util_port.IsMklEnabled()),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }))


# -- parent -----------------------------------------------------------------------

def xla_compilations(log):
    """(count, seconds) of XLA compilations in a child's log (device_compiler VLOG)."""
    found = re.findall(r"Compilation of XLA executable time: .*?\(cumulative: ([0-9.]+) "
                       r"(us|ms|s|min)\b.*?#called: (\d+)\)", log)
    if not found:
        return 0, 0.0
    value, unit, count = found[-1]
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}[unit]
    return int(count), float(value) * scale


def run_child(spec):
    env = dict(os.environ,
               TF_ENABLE_ONEDNN_OPTS="1" if spec["onednn"] else "0",
               # INFO level only for device_compiler's compile count (log goes to a file).
               TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_compiler=1")
    env.pop("TF_XLA_FLAGS", None)
    if spec["xla"]:
        env["TF_XLA_FLAGS"] = XLA_FLAGS
    row = dict(spec, loadavg_before=os.getloadavg())
    begin = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        try:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env, check=False,
                timeout=CHILD_TIMEOUT_S)
            returncode, stdout = out.returncode, out.stdout
        except subprocess.TimeoutExpired:
            returncode, stdout = "timeout", ""
        log.seek(0)
        text = log.read()
    row["child_s"] = time.perf_counter() - begin
    row["xla_compilations"], row["xla_compile_s"] = xla_compilations(text)
    lines = stdout.strip().splitlines()
    if returncode != 0 or not lines:
        errors = [line for line in text.splitlines() if "Error" in line or "error" in line]
        row["error"] = (f"exit {returncode}: "
                        + " | ".join((errors or text.splitlines())[-3:])[-600:])
        return row
    row.update(json.loads(lines[-1]))
    return row


def label(row):
    return (f"{row['augment_on']:<6} | {'on' if row['onednn'] else 'off':>6} | "
            f"{'on' if row['xla'] else 'off':>3}")


def print_table(rows, peak):
    header = (f"{'network':<11} | {'batch':>5} | {'input':<6} | {'oneDNN':>6} | {'XLA':>3} | "
              f"{'img/s':>6} | {'vs base':>7} | {'step s':>6} | {'1st loop s':>10} | "
              f"{'CPU util':>8} | {'alone img/s':>11} | {'GFLOP/s':>7} | {'% peak':>6} | "
              f"{'% alone':>7} | {'XLA compiles':>12}")
    print(header)
    print("-" * len(header))
    for row in rows:
        start = f"{row['network']:<11} | {row['batch']:>5} | {label(row)} | "
        if "error" in row:
            print(start + f"FAILED: {row['error'][:200]}")
            continue
        ratio = f"{row['vs_baseline']:6.2f}x" if row.get("vs_baseline") else f"{'-':>7}"
        share = (f"{100 * row['share_of_peak']:6.1f}"
                 if row.get("share_of_peak") is not None else f"{'-':>6}")
        alone = (f"{100 * row['share_of_peak_if_alone']:7.1f}"
                 if row.get("share_of_peak_if_alone") is not None else f"{'-':>7}")
        gflops = (f"{row['achieved_gflops']:7.1f}"
                  if row.get("achieved_gflops") is not None else f"{'-':>7}")
        compiles = f"{row['xla_compilations']} ({row['xla_compile_s']:.0f} s)"
        print(start + f"{row['images_per_s']:6.2f} | {ratio} | {row['median_step_s']:6.2f} | "
              f"{row['first_loop_s']:10.1f} | {row['cpu_util']:8.2f} | "
              f"{row['images_per_s_if_alone']:11.2f} | {gflops} | {share} | {alone} | "
              f"{compiles:>12}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--quick", action="store_true",
                        help="half the batch and fewer steps (a smoke run, noisier)")
    parser.add_argument("--full", action="store_true",
                        help="all 8 combinations per network, not one factor at a time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    cpu = cpu_info()
    peak = cpu["logical_cpus"] * cpu["ghz"] * FP32_FLOPS_PER_CYCLE if cpu["ghz"] else None
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for network in args.only:
        batch, warmup, timed = NETWORKS[network]["quick" if args.quick else "run"]
        flops = None
        base_ips = None
        for variant in variants(args.full):
            is_base = variant == BASELINE
            spec = dict(network=network, batch=batch, warmup=warmup, timed=timed,
                        flops=is_base, baseline=is_base, **variant)
            print(f"running {network} {variant} ...", file=sys.stderr, flush=True)
            row = run_child(spec)
            if "error" not in row:
                if is_base:
                    flops, base_ips = row["forward_gflops_per_image"], row["images_per_s"]
                row["forward_gflops_per_image"] = flops
                row["vs_baseline"] = row["images_per_s"] / base_ips if base_ips else None
                row["images_per_s_if_alone"] = cpu["logical_cpus"] / row["cpu_s_per_image"]
                if flops and peak:
                    per_image = VIEWS * TRAIN_PASSES_PER_FORWARD * flops
                    row["train_gflops_per_image"] = per_image
                    row["achieved_gflops"] = per_image * row["images_per_s"]
                    row["share_of_peak"] = row["achieved_gflops"] / peak
                    row["share_of_peak_if_alone"] = (
                        per_image * row["images_per_s_if_alone"] / peak)
            print(f"  {row.get('images_per_s', 'FAILED')} img/s in {row['child_s']:.0f} s",
                  file=sys.stderr, flush=True)
            rows.append(row)
    load_after = os.getloadavg()
    # Did the XLA rows compile the train step, i.e. more compilations than the
    # same network's baseline (whose only XLA programs are the augmentation's)?
    for row in rows:
        base = next(r for r in rows if r["network"] == row["network"] and r["baseline"])
        if row["xla"] and "error" not in row and "error" not in base:
            row["xla_compiled_step"] = row["xla_compilations"] > base["xla_compilations"]

    print_table(rows, peak)
    print(machine_line(cpu, rows, load_before, load_after, time.perf_counter() - started,
                       peak=peak))

    write_results(RESULTS, {
        "benchmark": "SimCLR pretraining end to end (tf.data input + train step) with "
                     "tf_simclr.train.trainer.Trainer, OneDeviceStrategy(CPU), float32, LARS",
        "method": {
            "rows": "one child process per row; baseline = input on host, oneDNN on, "
                    "no XLA; vs_baseline = images_per_s / the same network's baseline",
            "time": "steps_per_loop=1; warmup_steps not timed (the first traces and "
                    "compiles); images_per_s = batch / median of timed_steps intervals "
                    "between trainer.history appends (input + step + per-loop "
                    "bookkeeping); first_loop_s = Trainer.run() to the first append",
            "images": "images per second; each image is 2 augmented views",
            "onednn": "TF_ENABLE_ONEDNN_OPTS=1/0 in the child; onednn_enabled is "
                      "IsMklEnabled() there",
            "xla": f"TF_XLA_FLAGS='{XLA_FLAGS}' (auto-clustering); xla_compilations "
                   "counts every XLA compilation in the child, including the "
                   "augmentation's jit_compile functions; xla_compiled_step = more "
                   "than the network's baseline",
            "cpu": "cpu_util = child CPU seconds / wall seconds over the timed steps; "
                   "images_per_s_if_alone = logical cpus / CPU seconds per image",
            "flops": "bench_networks.forward_flops of the encoder at batch 1 (2 FLOPs "
                     "per MAC), counted in the baseline row; train = 2 views x 3 x "
                     "forward per image; heads and loss not counted (< 0.3%)",
            "peak": f"logical cpus x GHz ('cpu MHz') x {FP32_FLOPS_PER_CYCLE} FP32 "
                    "FLOPs/cycle (AVX2 FMA)",
            "quick": args.quick, "full": args.full,
        },
        "machine": machine(cpu, rows, load_before, load_after, peak_gflops_fp32=peak),
        "networks": {name: {k: v for k, v in NETWORKS[name].items()
                            if k not in ("run", "quick")} for name in args.only},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
