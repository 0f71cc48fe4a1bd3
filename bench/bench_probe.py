"""The probe against the two-epoch SGD linear evaluation, on one pretrained encoder.

    .venv/bin/python bench/bench_probe.py --model_dir=/tmp/tf_simclr_quickstart

Both evaluate the encoder of `--model_dir` (a pretraining run, e.g. the
quickstart's) on its train/eval splits, each in a fresh child process started one
after the other in this invocation:

  * sgd: the linear-evaluation protocol the quickstart used to run
    (`config.linear_eval_config`: frozen encoder, BatchNorm in inference mode,
    zero-initialised linear head, momentum SGD at --sgd_learning_rate per 256
    images, crop+flip augmentation, --sgd_epochs epochs), then top-1 on the eval split;
  * probe: `tf_simclr.probe` with an empty output dir (so feature extraction is
    included), its default grid (two L2 values per decade, patience 2);
  * probe, paper grid: the same cached features refitted on SimCLR appendix B.8's
    45-value grid without early stopping (fit seconds only; extraction is cached).

"seconds" is measured in the child from just before the evaluation starts to its
end (the interpreter and TensorFlow start-up are excluded, identically for both).
The load average before each row is recorded (the machine is shared).
Prints a Markdown table and writes bench/results/probe.json.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _child(kind, model_dir, work_dir, epochs, learning_rate):
    sys.path.insert(0, REPO)
    from tf_simclr import config as config_lib
    from tf_simclr import job
    from tf_simclr.probe import __main__ as probe_main
    pretrain = config_lib.load(model_dir)
    started = time.time()
    if kind == "sgd":
        config = config_lib.linear_eval_config(
            pretrain.replace(linear_eval_epochs=epochs, linear_eval_learning_rate=learning_rate,
                             probe="none")).replace(
            model_dir=os.path.join(work_dir, "sgd"), keep_hub_module_max=0)
        result = job.run(config)
        top1 = result["eval"]["label_top_1_accuracy"]
    else:
        overrides = {} if kind == "probe" else {"probe_l2_steps": 45, "probe_patience": 0}
        values = argparse.Namespace(hub_module=None, baseline="none", baselines=False,
                                    output_dir=os.path.join(work_dir, "probe"),
                                    neighbours=False, model_dir=model_dir, checkpoint=None)
        probe_config = config_lib.ProbeConfig(**overrides)  # the defaults, not the run's
        result = probe_main.run(dataclasses.replace(pretrain, probe=probe_config), values)
        top1 = result["linear_top1"]
        if kind != "probe":
            return {"seconds": result["linear_seconds"], "top1": top1, "l2": result["l2"],
                    "fits": len(result["l2_grid"]) + 1, "knn_top1": result["knn_top1"]}
        return {"seconds": time.time() - started, "top1": top1, "l2": result["l2"],
                "fits": len(result["l2_grid"]) + 1, "knn_top1": result["knn_top1"],
                "features_seconds": result["features_seconds"],
                "linear_seconds": result["linear_seconds"]}
    return {"seconds": time.time() - started, "top1": top1}


ROWS = (("sgd", "SGD linear eval (2 epochs, augmented)"),
        ("probe", "probe: extraction + L-BFGS, 23-value grid + kNN"),
        ("probe45", "probe refit, paper's 45-value grid (fit only)"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--sgd_epochs", type=int, default=2)
    parser.add_argument("--sgd_learning_rate", type=float, default=0.1)
    parser.add_argument("--child")
    parser.add_argument("--work_dir")
    args = parser.parse_args()
    if args.child:
        result = _child(args.child, args.model_dir, args.work_dir, args.sgd_epochs,
                        args.sgd_learning_rate)
        print("RESULT " + json.dumps(result))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as work_dir:
        for kind, _ in ROWS:
            load = os.getloadavg()[0]
            out = subprocess.run(
                [sys.executable, __file__, f"--child={kind}", f"--model_dir={args.model_dir}",
                 f"--work_dir={work_dir}", f"--sgd_epochs={args.sgd_epochs}",
                 f"--sgd_learning_rate={args.sgd_learning_rate}"],
                capture_output=True, text=True, check=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
            rows[kind] = {**json.loads(line[len("RESULT "):]), "load_before": load}
    sgd = rows["sgd"]
    lines = ["| evaluation | seconds | top-1 | vs SGD: speed | vs SGD: points | load |",
             "|---|---|---|---|---|---|"]
    for kind, label in ROWS:
        row = rows[kind]
        lines.append(f"| {label} | {row['seconds']:.1f} | {100 * row['top1']:.2f}% | "
                     f"{sgd['seconds'] / row['seconds']:.1f}x | "
                     f"{100 * (row['top1'] - sgd['top1']):+.1f} | {row['load_before']:.1f} |")
    table = "\n".join(lines)
    print(table)
    machine = {"cpu": _cpu_model(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "probe.json"), "w") as f:
        json.dump({"machine": machine, "model_dir": args.model_dir, "rows": rows,
                   "table": table}, f, indent=2)


def _cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
