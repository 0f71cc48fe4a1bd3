"""Pretraining images/s of the quickstart network, today's code path against the earlier one.

    .venv/bin/python bench/bench_quickstart_speed.py [--rounds 3] [--loops 6]

The network and recipe are flags/quickstart.cfg's (ResNet-18 at 1/8 width, CIFAR
stem, 28 px, batch 256, LARS, host augmentation), parsed from the flagfile itself;
the data are random 28 x 28 uint8 images held in memory (bench_pretrain's
InMemorySource), so nothing is read from disk. Rows, each a fresh child process:

  * keras_bn: BatchNorm as keras.layers.BatchNormalization composes it (the code
    path before layers.BatchNorm ran the fused kernel: the child puts the parent's
    `call` back on the class).
  * fused_bn: the library as it is.
  * fused_bn_xla: the same with XLA auto-clustering of the train loop
    (TF_XLA_FLAGS="--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit").

The rows run interleaved, --rounds times (ABCABC...), so machine load drifts over
all of them alike. Each child runs the library's Trainer with the quickstart's
steps_per_loop (25) cut to --steps_per_loop; the first loop (tracing) is not timed;
images/s = images of the timed loops / their wall time. "CPU ms/img" is the child's
CPU seconds per image over the same loops: on a shared machine it moves less than
wall time does. The final loss of each row is printed so that a faster path that
learns differently would show.

Prints a table (median over rounds per row, and the ratio to keras_bn) and writes
bench/results/quickstart_speed.json.
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
RESULTS = os.path.join(HERE, "results", "quickstart_speed.json")
sys.path.insert(0, HERE)
from bench_pretrain import XLA_FLAGS, InMemorySource, TimedHistory, quickstart_config  # noqa: E402
from report import cpu_info, write_results  # noqa: E402

ROWS = ("keras_bn", "fused_bn", "fused_bn_xla")


def child(spec):
    sys.path.insert(0, REPO)
    import tf_simclr  # noqa: F401  (environment defaults before TensorFlow loads)
    # isort: split
    import keras
    import tensorflow as tf

    from tf_simclr.models import layers
    from tf_simclr.train import strategy as strategy_lib
    from tf_simclr.train import trainer as trainer_lib

    if spec["row"] == "keras_bn":
        layers.BatchNorm.call = keras.layers.BatchNormalization.call
    with tempfile.TemporaryDirectory(prefix="bench_quickstart_") as model_dir:
        config = quickstart_config(model_dir, spec["steps_per_loop"] * spec["loops"],
                                   steps_per_loop=spec["steps_per_loop"])
        batch = config.train.train_batch_size
        source = InMemorySource(num_train=8 * batch, size=config.data.image_size,
                                num_classes=10)
        strategy = strategy_lib.make_strategy(config.hardware)
        state = trainer_lib.TrainState(config, strategy, 10, source.info.num_train_examples)
        trainer = trainer_lib.Trainer(state, source)
        trainer.history = TimedHistory()
        trainer.run()
    marks = trainer.history.marks
    images = batch * spec["steps_per_loop"] * (len(marks) - 1)
    wall, cpu = marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]
    print(json.dumps({"images_per_s": images / wall, "cpu_ms_per_image": 1000 * cpu / images,
                      "final_loss": float(trainer.history[-1][1]["total_loss"]),
                      "tensorflow": tf.__version__, "keras": keras.__version__}))


def run_child(spec):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_XLA_FLAGS", None)
    if spec["row"].endswith("_xla"):
        env["TF_XLA_FLAGS"] = XLA_FLAGS
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=env, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return dict(spec, error=f"exit {out.returncode}: {out.stderr.strip()[-400:]}")
    return dict(spec, **json.loads(lines[-1]), loadavg=os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loops", type=int, default=6, help="loops per child, 1 untimed")
    parser.add_argument("--steps_per_loop", type=int, default=5)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    started = time.time()
    results = []
    for round_index in range(args.rounds):
        for row in args.rows:
            result = run_child(dict(row=row, round=round_index, loops=args.loops,
                                    steps_per_loop=args.steps_per_loop))
            print(json.dumps(result), flush=True)
            results.append(result)
    table = []
    for row in args.rows:
        done = [r for r in results if r["row"] == row and "error" not in r]
        if not done:
            table.append(dict(row=row, error=[r["error"] for r in results if r["row"] == row]))
            continue
        table.append(dict(row=row, rounds=len(done),
                          images_per_s=statistics.median(r["images_per_s"] for r in done),
                          cpu_ms_per_image=statistics.median(r["cpu_ms_per_image"]
                                                             for r in done),
                          final_loss=[round(r["final_loss"], 4) for r in done]))
    base = next((t for t in table if t["row"] == "keras_bn" and "error" not in t), None)
    print("\n| row | images/s | vs keras_bn | CPU ms/img | vs keras_bn | final loss per round |")
    print("|---|---|---|---|---|---|")
    for t in table:
        if "error" in t:
            print(f"| {t['row']} | error: {t['error'][0][:80]} | | | | |")
            continue
        speed = f"{t['images_per_s'] / base['images_per_s']:.2f}x" if base else ""
        cpu = f"{base['cpu_ms_per_image'] / t['cpu_ms_per_image']:.2f}x" if base else ""
        print(f"| {t['row']} | {t['images_per_s']:.0f} | {speed} | {t['cpu_ms_per_image']:.2f} "
              f"| {cpu} | {', '.join(map(str, t['final_loss']))} |")
    write_results(RESULTS, {"cpu": cpu_info(), "seconds": time.time() - started,
                            "table": table, "runs": results})


if __name__ == "__main__":
    sys.exit(main())
