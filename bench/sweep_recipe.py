"""The recipe search on Fashion-MNIST: pretraining settings -> probe top-1, kNN, minutes.

    .venv/bin/python bench/sweep_recipe.py --stage=knobs [--only NAME ...] [--seeds 0 1 2]
        [--root /tmp/tf_simclr_sweep]

Every setting is flags/quickstart.cfg plus the flags in SETTINGS (or a flagfile),
run as a user runs it, `python -m tf_simclr.run --flagfile=... --model_dir=DIR`, one
after the other, with --probe=encoder (the baselines do not change between
settings; the quickstart's own run measures them). A setting's row is read from its
model_dir's result.json: the probe's linear and kNN top-1 of the encoder of the final
step (not the best epoch), the pretraining minutes (train_seconds) and the whole
command's minutes. A model_dir that already holds a result.json is read, not rerun,
so the sweep can be stopped and continued; delete the folder to rerun a setting.
The results file keeps the stage's earlier rows; a rerun replaces a (setting, seed).

With several --seeds each setting runs once per seed (--seed=S, model_dir NAME_sS)
and the table gives mean and spread (min-max) over the seeds.

Prints a Markdown table and writes bench/results/sweep_<stage>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# stage -> {setting name: flags on top of flags/quickstart.cfg}
SETTINGS = {
    # One knob at a time from the quickstart's recipe, 2 epochs each.
    "knobs": {
        "quickstart": [],
        "crop_0.2": ["--crop_min_area=0.2"],
        "crop_0.35": ["--crop_min_area=0.35"],
        "crop_0.5": ["--crop_min_area=0.5"],
        "no_color": ["--color_jitter_strength=0"],
        "color_1.0": ["--color_jitter_strength=1.0"],
        "blur": ["--use_blur=true"],
        "lr_0.2": ["--learning_rate=0.2"],
        "lr_0.4": ["--learning_rate=0.4"],
        "tau_0.1": ["--temperature=0.1"],
        "tau_0.5": ["--temperature=0.5"],
        "batch_128": ["--train_batch_size=128"],
        "batch_512": ["--train_batch_size=512"],
        "proj_64": ["--proj_out_dim=64"],
        "proj_3_layers": ["--num_proj_layers=3"],
        "width_0.25": ["--width_multiplier=0.25"],
        "width_0.5": ["--width_multiplier=0.5"],
    },
    # Towards the quickstart's 86% in 10 minutes: the 1/4-width network, epochs.
    "budget": {
        "width_0.25_3_epochs": ["--width_multiplier=0.25", "--train_epochs=3"],
        "width_0.25_4_epochs": ["--width_multiplier=0.25", "--train_epochs=4"],
        # 2 epochs at 1/4 width, LARS 0.2 (and crops from 0.2): the quickstart's
        # pretraining grown to ~6.5 min.
        "width_0.25_lr_0.2": ["--width_multiplier=0.25", "--train_epochs=2",
                              "--learning_rate=0.2"],
        "width_0.25_lr_0.2_crop_0.2": ["--width_multiplier=0.25", "--train_epochs=2",
                                       "--learning_rate=0.2", "--crop_min_area=0.2"],
        # 256-d features for one epoch.
        "width_0.5_1_epoch": ["--width_multiplier=0.5", "--train_epochs=1"],
        # Seeds of the chosen settings: the quickstart as committed, and the 1/4-width
        # network for 2 epochs (the best that runs in ~11 minutes with the baselines).
        "quickstart": [],
        "width_0.25_2_epochs": ["--width_multiplier=0.25", "--train_epochs=2"],
    },
}
COMMON = {"knobs": ["--train_epochs=2"]}


def run_setting(name, flags, root, seed):
    """Runs (or reads) one setting; returns its row."""
    model_dir = os.path.join(root, f"{name}_s{seed}")
    result_path = os.path.join(model_dir, "result.json")
    if not os.path.exists(result_path):
        command = [sys.executable, "-m", "tf_simclr.run",
                   f"--flagfile={os.path.join(REPO, 'flags', 'quickstart.cfg')}",
                   f"--model_dir={model_dir}", "--probe=encoder", "--keep_hub_module_max=0",
                   f"--seed={seed}", *flags]
        print("$", " ".join(command[1:]), flush=True)
        started = time.time()
        with open(os.path.join(root, f"{name}_s{seed}.log"), "w") as log:
            done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  check=False)
        if done.returncode != 0:
            return {"name": name, "seed": seed, "flags": flags,
                    "error": f"exit {done.returncode}, see {log.name}"}
        print(f"  {name} seed {seed}: {(time.time() - started) / 60:.1f} min", flush=True)
    with open(result_path) as f:
        result = json.load(f)
    # The trained encoder's row (result.json sorts its keys: "pixels" would come first
    # in a model_dir probed with the baselines).
    probe = result["eval"]["probe"]["simclr"]
    return {"name": name, "seed": seed, "flags": flags,
            "linear_top1": probe["linear_top1"], "knn_top1": probe["knn_top1"],
            "knn20_top1": probe.get("knn20_top1"),
            "train_minutes": result["train_seconds"] / 60,
            "minutes": result["seconds"] / 60, "loadavg_after": os.getloadavg()[0]}


def merged_rows(path, rows):
    """The stage's earlier rows from `path` with this run's rows replacing the same
    (setting, seed): a run of some settings (--only) keeps the others in the table."""
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        earlier = json.load(f)["rows"]
    fresh = {(r["name"], r["seed"]) for r in rows}
    return [r for r in earlier if (r["name"], r["seed"]) not in fresh] + rows


def summarise(rows):
    """name -> mean and (min, max) of each metric over the seeds that finished."""
    table = {}
    for row in rows:
        table.setdefault(row["name"], []).append(row)
    summary = {}
    for name, runs in table.items():
        done = [r for r in runs if "error" not in r]
        if not done:
            summary[name] = {"error": runs[0]["error"]}
            continue
        summary[name] = {"seeds": [r["seed"] for r in done], "flags": done[0]["flags"]}
        for key in ("linear_top1", "knn_top1", "knn20_top1", "train_minutes", "minutes"):
            values = [r[key] for r in done if r.get(key) is not None]
            if values:
                summary[name][key] = statistics.mean(values)
                summary[name][key + "_range"] = (min(values), max(values))
    return summary


def markdown(summary):
    lines = ["| setting | flags | probe top-1 | kNN k=200 | kNN k=20 | pretrain min | total min |"
             " seeds |", "|---|---|---|---|---|---|---|---|"]

    def cell(row, key, percent=True):
        if key not in row:
            return ""
        low, high = row[key + "_range"]
        scale, unit = (100, "%") if percent else (1, "")
        text = f"{scale * row[key]:.2f}{unit}" if percent else f"{row[key]:.1f}"
        if len(row["seeds"]) > 1:
            text += f" ({scale * low:.2f}-{scale * high:.2f})" if percent else \
                f" ({low:.1f}-{high:.1f})"
        return text

    for name, row in summary.items():
        if "error" in row:
            lines.append(f"| {name} | | error: {row['error']} | | | | | |")
            continue
        lines.append(f"| {name} | {' '.join(row['flags']) or '(quickstart)'} | "
                     f"{cell(row, 'linear_top1')} | {cell(row, 'knn_top1')} | "
                     f"{cell(row, 'knn20_top1')} | {cell(row, 'train_minutes', False)} | "
                     f"{cell(row, 'minutes', False)} | {len(row['seeds'])} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default="knobs", choices=sorted(SETTINGS))
    parser.add_argument("--only", nargs="+", help="setting names of the stage to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--root", default="/tmp/tf_simclr_sweep")
    args = parser.parse_args()
    settings = SETTINGS[args.stage]
    unknown = sorted(set(args.only or ()) - set(settings))
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: not in stage {args.stage!r}; expected some "
                     f"of {', '.join(settings)}")
    os.makedirs(args.root, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for name in args.only or settings:
            flags = COMMON.get(args.stage, []) + settings[name]
            rows.append(run_setting(name, flags, args.root, seed))
    path = os.path.join(HERE, "results", f"sweep_{args.stage}.json")
    rows = merged_rows(path, rows)
    summary = summarise(rows)
    table = markdown(summary)
    print(table)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"rows": rows, "summary": summary, "table": table,
                   "date": time.strftime("%Y-%m-%d")}, f, indent=1)


if __name__ == "__main__":
    main()
