"""The cost of --deterministic: quickstart pretraining images/s with and without it.

    .venv/bin/python bench/bench_deterministic.py [--rounds 2] [--warmup 2] [--timed 10]

What runs. The quickstart network as flags/quickstart.cfg sets it (ResNet-18 at 1/8
width, CIFAR stem, 28 px, batch 256, LARS, no blur), pretraining through the library's
`TrainState`/`Trainer.run()` on random 28 px images held in memory
(bench_pretrain.InMemorySource), with the job's seeding (keras.utils.set_random_seed).
Timing is bench_pretrain.py's: one step per loop, its TimedHistory; the first --warmup
steps are not timed; images/s = batch / median of the --timed step intervals.

Variants, each in a fresh child process (the settings are process-wide and some only
take effect before TensorFlow initialises), run one after the other in every round so
that load from other jobs falls on all of them alike:
  * default: no flag (op determinism off, Grappler on).
  * deterministic: what --deterministic does, tf_simclr.train.determinism.enable.
  * inter-op 1: the other fix the bisection found, not the one used: op determinism
    and one inter-op thread (the memory optimizer's AssignAdds then run in one fixed
    order; tf.config.threading.set_inter_op_parallelism_threads(1)).
Each child also prints its last step's loss (repr of the float32): the rows of a
deterministic variant must agree bitwise across rounds; the default's need not.

Shared machine: the load average before each row is recorded, "CPU util" is the
child's CPU seconds / wall seconds over the timed steps, "alone img/s" = cores / CPU
seconds per image (as bench_pretrain.py). Prints a table and writes
bench/results/deterministic.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "deterministic.json")
sys.path.insert(0, HERE)
from bench_pretrain import InMemorySource, TimedHistory, quickstart_config  # noqa: E402
from report import cpu_info, machine, machine_line, write_results  # noqa: E402

VARIANTS = ("default", "deterministic", "inter-op 1")
NUM_CLASSES = 10
CHILD_TIMEOUT_S = 900


def child(spec):
    """Runs one row in this (fresh) process; prints one JSON line."""
    sys.path.insert(0, REPO)
    import tf_simclr  # noqa: F401  (environment defaults before TensorFlow loads)
    # isort: split
    import keras
    import tensorflow as tf

    from tf_simclr.train import determinism
    from tf_simclr.train import strategy as strategy_lib
    from tf_simclr.train import trainer as trainer_lib

    variant, warmup, timed = spec["variant"], spec["warmup"], spec["timed"]
    if variant == "inter-op 1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.experimental.enable_op_determinism()
    steps = warmup + timed
    with tempfile.TemporaryDirectory(prefix="bench_deterministic_") as model_dir:
        config = quickstart_config(model_dir, steps, steps_per_loop=1,
                                   deterministic=variant == "deterministic")
        batch, size = config.train.train_batch_size, config.data.image_size
        source = InMemorySource(num_train=4 * batch, size=size, num_classes=NUM_CLASSES)
        keras.utils.set_random_seed(config.train.seed)  # as job.run
        strategy = strategy_lib.make_strategy(config.hardware)
        if config.train.deterministic:
            determinism.enable(strategy)  # as job.run
        state = trainer_lib.TrainState(config, strategy, NUM_CLASSES,
                                       source.info.num_train_examples)
        trainer = trainer_lib.Trainer(state, source)
        trainer.history = TimedHistory()
        trainer.run()
        marks = trainer.history.marks
        if len(marks) != steps or state.step != steps:
            raise RuntimeError(f"expected {steps} loops of 1 step, got {len(marks)} loops "
                               f"ending at step {state.step}")
    step_s = [marks[i + 1][0] - marks[i][0] for i in range(warmup - 1, steps - 1)]
    wall = marks[-1][0] - marks[warmup - 1][0]
    cpu = marks[-1][1] - marks[warmup - 1][1]
    print(json.dumps({
        "batch": batch, "image_size": size, "step_s": step_s,
        "median_step_s": statistics.median(step_s),
        "images_per_s": batch / statistics.median(step_s),
        "cpu_util": cpu / wall, "cpu_s_per_image": cpu / (batch * timed),
        "last_loss": repr(trainer.history[-1][1]["total_loss"]),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "grappler": tf.config.optimizer.get_experimental_options(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }))


def run_child(spec):
    row = dict(spec, loadavg_before=os.getloadavg())
    begin = time.perf_counter()
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True, text=True, check=False, timeout=CHILD_TIMEOUT_S)
    row["child_s"] = time.perf_counter() - begin
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        row["error"] = f"exit {out.returncode}: " + " | ".join(out.stderr.splitlines()[-3:])
        return row
    row.update(json.loads(lines[-1]))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed first steps (the first traces the step), >= 1")
    parser.add_argument("--timed", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    cpu = cpu_info()
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            print(f"round {round_index + 1}: {variant} ...", file=sys.stderr, flush=True)
            row = run_child(dict(variant=variant, round=round_index + 1,
                                 warmup=args.warmup, timed=args.timed))
            if "error" not in row:
                row["images_per_s_if_alone"] = cpu["logical_cpus"] / row["cpu_s_per_image"]
            rows.append(row)
    load_after = os.getloadavg()

    summary = {}
    for variant in VARIANTS:
        done = [r for r in rows if r["variant"] == variant and "error" not in r]
        if done:
            summary[variant] = {
                "median_images_per_s": statistics.median(r["images_per_s"] for r in done),
                "median_images_per_s_if_alone": statistics.median(
                    r["images_per_s_if_alone"] for r in done),
                "last_loss_same_in_every_round": len({r["last_loss"] for r in done}) == 1,
            }
    base = summary.get("default")

    header = (f"{'variant':<13} | {'round':>5} | {'img/s':>6} | {'step s':>6} | "
              f"{'CPU util':>8} | {'alone img/s':>11} | {'load before':>11} | last loss")
    print(header)
    print("-" * len(header))
    for row in rows:
        start = f"{row['variant']:<13} | {row['round']:>5} | "
        if "error" in row:
            print(start + f"FAILED: {row['error'][:200]}")
            continue
        print(start + f"{row['images_per_s']:6.1f} | {row['median_step_s']:6.3f} | "
              f"{row['cpu_util']:8.2f} | {row['images_per_s_if_alone']:11.1f} | "
              f"{row['loadavg_before'][0]:11.2f} | {row['last_loss']}")
    print()
    print(f"{'variant':<13} | {'median img/s':>12} | {'vs default':>10} | "
          f"{'alone img/s':>11} | {'vs default':>10} | same last loss every round")
    for variant, s in summary.items():
        ratio = s["median_images_per_s"] / base["median_images_per_s"] if base else None
        alone = (s["median_images_per_s_if_alone"] / base["median_images_per_s_if_alone"]
                 if base else None)
        s["vs_default"], s["vs_default_if_alone"] = ratio, alone
        print(f"{variant:<13} | {s['median_images_per_s']:12.1f} | "
              f"{ratio if ratio else float('nan'):9.3f}x | "
              f"{s['median_images_per_s_if_alone']:11.1f} | "
              f"{alone if alone else float('nan'):9.3f}x | "
              f"{'yes' if s['last_loss_same_in_every_round'] else 'no'}")
    print(machine_line(cpu, rows, load_before, load_after, time.perf_counter() - started))

    write_results(RESULTS, {
        "benchmark": "quickstart pretraining images/s with and without --deterministic "
                     "(tf_simclr.train.trainer.Trainer, OneDeviceStrategy(CPU), "
                     "flags/quickstart.cfg network, in-memory random images)",
        "method": {
            "rows": "one child process per row; every round runs each variant in turn",
            "variants": {
                "default": "no flag",
                "deterministic": "tf_simclr.train.determinism.enable (op determinism, "
                                 "Grappler meta optimizer off)",
                "inter-op 1": "op determinism + inter_op_parallelism_threads=1 "
                              "(alternative fix, not used)"},
            "time": "steps_per_loop=1; warmup steps not timed; images_per_s = batch / "
                    "median of the timed step intervals (bench_pretrain.TimedHistory)",
            "cpu": "cpu_util = child CPU s / wall s over the timed steps; "
                   "images_per_s_if_alone = logical cpus / CPU s per image",
            "warmup": args.warmup, "timed": args.timed, "rounds": args.rounds,
        },
        "machine": machine(cpu, rows, load_before, load_after),
        "summary": summary,
        "rows": rows,
    })


if __name__ == "__main__":
    main()
