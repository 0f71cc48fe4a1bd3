"""The label-efficiency table on Fashion-MNIST: accuracy with 1% and 10% of the labels.

    .venv/bin/python bench/label_efficiency.py --pretrained=DIR [--fractions 0.01 0.1]
        [--methods ...] [--seeds 0] [--root /tmp/tf_simclr_label_efficiency]
        [--results label_efficiency]

DIR is a pretraining model_dir of the architecture in flags/fashion_mnist_finetune.cfg
(ResNet-18 at 1/4 width: flags/fashion_mnist_1h.cfg with --width_multiplier=0.25).
For each fraction F of the train split's labels (stratified: the same fraction of
every class, chosen by --seed) and the whole test split, the rows of --methods, each
the command a user runs:

- pixels: `python -m tf_simclr.probe --baseline=pixels --label_fraction=F`, the
  converged logistic regression on standardised raw pixels;
- supervised from scratch: `python -m tf_simclr.run --flagfile=flags/fashion_mnist_finetune.cfg
  --finetune_from_scratch --label_fraction=F`, the same network trained on the labels alone;
- SimCLR probe: `python -m tf_simclr.probe --model_dir=DIR --label_fraction=F`;
- SimCLR fine-tuned: the supervised command with `--checkpoint=DIR` instead;
- distilled (SimCLRv2's third stage, issue 18): `python -m tf_simclr.run
  --flagfile=flags/fashion_mnist_distill.cfg --teacher=<the fine-tuned row's model_dir>`,
  a student from random weights on every train image, the labels unused: the teacher's
  size at temperature 0.1 (self-distillation), or half its width at 1.0;
each supervised and fine-tuning row at the learning rate that suits it and, as a
check, at the other's (TRAINING); no rate is chosen on the test split.

Epochs per fraction (FINETUNE_EPOCHS) are SimCLRv2's: 60 at 1%, 30 at 10%; the
network sees the same number of images from scratch as when fine-tuned. Each row's
minutes are its command's wall-clock (the probe's include extracting features).
A row whose output already holds its result is read, not rerun.

Prints a Markdown table and writes bench/results/<--results>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import report

HERE = os.path.dirname(os.path.abspath(__file__))
FINETUNE_FLAGFILE = os.path.join(report.REPO, "flags", "fashion_mnist_finetune.cfg")
DISTILL_FLAGFILE = os.path.join(report.REPO, "flags", "fashion_mnist_distill.cfg")
FINETUNE_EPOCHS = {0.01: 60, 0.1: 30}
# Training rows: (start, learning rate). Each start gets the rate that suits it (a
# standard SGD rate 0.1 at batch 64 from scratch; 8x lower for fine-tuning, which
# must not wash out the pretrained weights), and the other one as a check row.
TRAINING = {"scratch": ("scratch", 0.4), "scratch_low_lr": ("scratch", 0.05),
            "simclr_finetune": ("simclr", 0.05), "simclr_finetune_high_lr": ("simclr", 0.4)}
# Distillation rows: the student's extra flags; the teacher is the simclr_finetune row.
# The learning rate times T: the T-softened loss has 1/T times larger gradients.
DISTILL = {"distill": ["--distill_temperature=0.1", "--learning_rate=0.04"],
           "distill_narrow": ["--distill_temperature=1", "--width_multiplier=0.125"]}
DISTILL_EPOCHS = 6
METHODS = ("pixels", "simclr_probe", *TRAINING, *DISTILL)
TITLES = {"pixels": "raw pixels + logistic regression",
          "simclr_probe": "SimCLR encoder, linear probe",
          "scratch": "supervised from scratch, lr 0.4",
          "scratch_low_lr": "supervised from scratch, lr 0.05",
          "simclr_finetune": "SimCLR encoder fine-tuned, lr 0.05",
          "simclr_finetune_high_lr": "SimCLR encoder fine-tuned, lr 0.4",
          "distill": "fine-tuned SimCLR distilled into the same network (T 0.1)",
          "distill_narrow": "fine-tuned SimCLR distilled into half its width (T 1)"}


def row_dir(root, method, fraction, seed):
    return os.path.join(root, f"{method}_{fraction:g}_s{seed}")


def command(method, fraction, seed, pretrained, root):
    """The command line (after the interpreter) of one row, and where its result lands."""
    output = row_dir(root, method, fraction, seed)
    common = [f"--label_fraction={fraction:g}", f"--seed={seed}"]
    if method in ("pixels", "simclr_probe"):
        source = ["--baseline=pixels"] if method == "pixels" else []
        return (["-m", "tf_simclr.probe", f"--model_dir={pretrained}", *source, *common,
                 f"--output_dir={output}", "--neighbours=false"],
                os.path.join(output, "probe_result.json"))
    if method in DISTILL:
        teacher = row_dir(root, "simclr_finetune", fraction, seed)
        return (["-m", "tf_simclr.run", f"--flagfile={DISTILL_FLAGFILE}",
                 f"--teacher={teacher}", *DISTILL[method], *common,
                 f"--train_epochs={DISTILL_EPOCHS}", f"--model_dir={output}",
                 "--keep_hub_module_max=0"],
                os.path.join(output, "result.json"))
    start, learning_rate = TRAINING[method]
    start = (["--finetune_from_scratch"] if start == "scratch"
             else [f"--checkpoint={pretrained}"])
    epochs = FINETUNE_EPOCHS.get(fraction, 30)
    return (["-m", "tf_simclr.run", f"--flagfile={FINETUNE_FLAGFILE}", *start, *common,
             f"--learning_rate={learning_rate:g}", f"--train_epochs={epochs}",
             f"--model_dir={output}", "--keep_hub_module_max=0"],
            os.path.join(output, "result.json"))


def run_row(method, fraction, seed, pretrained, root):
    """Runs (or reads) one row; returns it."""
    name = os.path.basename(row_dir(root, method, fraction, seed))
    args, result_path = command(method, fraction, seed, pretrained, root)
    row = {"method": method, "fraction": fraction, "seed": seed,
           "command": " ".join(["python", *args])}
    timing_path = os.path.join(root, name + ".seconds")
    if not os.path.exists(result_path):
        print("$", row["command"], flush=True)
        started = time.time()
        with open(os.path.join(root, name + ".log"), "w") as log:
            done = subprocess.run([sys.executable, *args], cwd=report.REPO, stdout=log,
                                  stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            return {**row, "error": f"exit {done.returncode}, see {log.name}"}
        with open(timing_path, "w") as f:
            f.write(f"{time.time() - started}\n")
    with open(result_path) as f:
        result = json.load(f)
    with open(timing_path) as f:
        row["minutes"] = float(f.read()) / 60
    if method in ("pixels", "simclr_probe"):
        row.update(top1=result["linear_top1"], knn_top1=result["knn_top1"],
                   num_labelled=result["num_train_examples"])
    else:
        row.update(top1=result["eval"]["label_top_1_accuracy"])
    print(f"  {name}: top-1 {100 * row['top1']:.2f}%, {row['minutes']:.1f} min", flush=True)
    return row


def markdown(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["fraction"], row["method"]), []).append(row)
    lines = ["| labels | method | test top-1 | minutes | seeds |", "|---|---|---|---|---|"]
    for (fraction, method), runs in groups.items():
        done = [r for r in runs if "error" not in r]
        if not done:
            lines.append(f"| {100 * fraction:g}% | {TITLES[method]} | error: "
                         f"{runs[0]['error']} | | |")
            continue
        top1 = [100 * r["top1"] for r in done]
        cell = f"{statistics.mean(top1):.2f}%"
        if len(top1) > 1:
            cell += f" ({min(top1):.2f}-{max(top1):.2f})"
        minutes = statistics.mean(r["minutes"] for r in done)
        lines.append(f"| {100 * fraction:g}% | {TITLES[method]} | {cell} | {minutes:.1f} | "
                     f"{len(done)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", required=True, help="a pretraining model_dir")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--root", default="/tmp/tf_simclr_label_efficiency")
    parser.add_argument("--results", default="label_efficiency",
                        help="bench/results/<name>.json receives the rows")
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    cpu, load_before, started = report.cpu_info(), os.getloadavg(), time.time()
    rows = [run_row(method, fraction, seed, os.path.abspath(args.pretrained), args.root)
            for fraction in args.fractions for seed in args.seeds for method in args.methods]
    table = markdown(rows)
    print(table)
    found = [dict(zip(("tensorflow", "keras"), subprocess.run(
        [sys.executable, "-c", "import tensorflow, keras; "
         "print(tensorflow.__version__, keras.__version__)"],
        capture_output=True, text=True, check=True).stdout.split()))]
    print(report.machine_line(cpu, found, load_before, os.getloadavg(),
                              time.time() - started))
    report.write_results(os.path.join(HERE, "results", args.results + ".json"), {
        "rows": rows, "table": table, "pretrained": os.path.abspath(args.pretrained),
        "machine": report.machine(cpu, found, load_before, os.getloadavg())})


if __name__ == "__main__":
    main()
