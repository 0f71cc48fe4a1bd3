"""The probe's L-BFGS with and without its preconditioner, on the same cached features.

    .venv/bin/python bench/bench_probe_solver.py [--model_dir=RUN] [--rounds 1]
        [--work_dir /tmp/tf_simclr_bench_probe_solver]

Rows: the raw-pixel baseline of Fashion-MNIST (28 px: 784 distinct columns after
merging the three equal channels), and with --model_dir the encoder of that run
(its data and model flags). Each row is probed by `python -m tf_simclr.probe` in a
fresh child with `--probe_curvature_scale=0` (L-BFGS on W, the code path before the
preconditioner) and with the default (0.25), both into the same --work_dir so the
features are extracted once (a first, untimed child extracts them) and the timed
children only fit: "fit s" is the probe's own `linear_seconds` (the L2 walk on the
held-out split + the refit), kNN excluded. Rows interleave per --rounds so load
drifts over both alike. Prints a Markdown table and writes
bench/results/probe_solver.json.
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
RESULTS = os.path.join(HERE, "results", "probe_solver.json")
sys.path.insert(0, HERE)
from report import cpu_info, write_results  # noqa: E402

PIXEL_FLAGS = ["--baseline=pixels", "--dataset=fashion_mnist", "--train_split=train",
               "--eval_split=test", "--image_size=28"]
SCALES = (0.0, 0.25)


def probe(flags, output_dir, scale):
    """Runs the probe CLI in a child; returns its probe_result.json."""
    command = [sys.executable, "-m", "tf_simclr.probe", *flags, f"--output_dir={output_dir}",
               "--neighbours=false", f"--probe_curvature_scale={scale}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n"
                         f"{done.stderr[-2000:]}")
    with open(os.path.join(output_dir, "probe_result.json"), encoding="utf-8") as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", help="also probe this run's encoder")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work_dir", default="/tmp/tf_simclr_bench_probe_solver")
    args = parser.parse_args()
    features = {"pixels": PIXEL_FLAGS}
    if args.model_dir:
        features["encoder"] = [f"--model_dir={args.model_dir}"]
    started, runs = time.time(), []
    for name, flags in features.items():
        output_dir = os.path.join(args.work_dir, name)
        probe(flags, output_dir, SCALES[-1])  # extracts the features once; not timed
        for round_index in range(args.rounds):
            for scale in SCALES:
                result = probe(flags, output_dir, scale)
                run = {"features": name, "curvature_scale": scale, "round": round_index,
                       "loadavg": os.getloadavg(),
                       **{key: result[key] for key in (
                           "linear_top1", "l2", "refit_iterations", "refit_converged",
                           "linear_seconds", "probe_dim")},
                       "walk_iterations": sum(e["iterations"] for e in result["l2_grid"]),
                       "walk_values": len(result["l2_grid"])}
                print(json.dumps(run), flush=True)
                runs.append(run)
    print("\n| features | solver | fit s | vs W | L-BFGS iterations (walk + refit) "
          "| L2 values walked | chosen l2 | linear top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    table = []
    for name in features:
        base = None
        for scale in SCALES:
            done = [r for r in runs if r["features"] == name and r["curvature_scale"] == scale]
            seconds = statistics.median(r["linear_seconds"] for r in done)
            base = base or seconds
            last = done[-1]
            row = {"features": name, "curvature_scale": scale, "fit_seconds": seconds,
                   "speedup": base / seconds, **{k: last[k] for k in (
                       "walk_iterations", "refit_iterations", "walk_values", "l2",
                       "linear_top1", "probe_dim")}}
            table.append(row)
            solver = "on W (before)" if scale == 0 else f"preconditioned, s = {scale}"
            print(f"| {name} ({row['probe_dim']}-d) | {solver} | {seconds:.0f} | "
                  f"{row['speedup']:.2f}x | {row['walk_iterations']} + "
                  f"{row['refit_iterations']} | {row['walk_values']} | {row['l2']:.3g} | "
                  f"{100 * row['linear_top1']:.2f}% |")
    write_results(RESULTS, {"cpu": cpu_info(), "seconds": time.time() - started,
                            "table": table, "runs": runs})


if __name__ == "__main__":
    sys.exit(main())
