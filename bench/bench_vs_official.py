"""Pretraining images/s side by side: the official google-research/simclr TF2 code vs tf_simclr.

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python bench/bench_vs_official.py [--quick]
        [--rounds 2] [--only r18_cifar32 r50_224] [--augment_on host device]
        [--official ../shared/official_simclr]

What runs. The official TF2 code, unmodified (`tf2/run.py` of the snapshot at --official,
see its ABOUT.md), and ours (`tf_simclr.run`, the module behind `python -m
tf_simclr.run`), each from its own command line with the same official flag values:
train_mode=pretrain, mode=train, the same dataset, batch, steps, checkpoint_steps,
ResNet depth/width, image size, blur, colour-jitter strength, LARS with the same
learning-rate/warm-up/weight-decay/momentum flags, temperature, hidden_norm, the
nonlinear 3-layer projection head to 128-d, lineareval_while_pretraining, global_bn,
use_tpu=False, a fresh temporary model_dir. Ours adds only its extension flags
--augment_on (host: tf.data, the default; device: inside the train step),
--steps_per_loop (set to checkpoint_steps, which is the official code's loop length) and
the extras it would otherwise run (kNN monitor, probe, linear eval) explicitly off.

Every measurement is a fresh child process: this script with --child SPEC. The official
child runs with TF_USE_LEGACY_KERAS=1 (tf.keras = tf_keras), puts the snapshot's tf2/
first on sys.path, imports its run.py as a module (which defines its absl flags), parses
the flags and calls its main(), as its `__main__` block would (after the same two calls
it makes: enable_v2_behavior, set_soft_device_placement). Ours runs without
TF_USE_LEGACY_KERAS and calls tf_simclr.run.main() after parsing its flags. No official
code is copied here. Both children get the same environment otherwise, including
TF_ENABLE_ONEDNN_OPTS=1 (tf_simclr's import-time default; TensorFlow's default is off on
AMD CPUs) unless the caller set it.

Data. TFDS cannot download here, so both read `tfds.testing.mock_data` of the real
builder (cifar10 or imagenet2012) with MockPolicy.USE_FILES over a temporary data_dir
holding only the builder's metadata with split sizes (num_examples per split): the
official main() needs `info.splits[...]`, which USE_CODE leaves empty (tests/testutil.py's
mock_tfds works for ours only). The examples are random, generated in Python by TFDS's
mock generator from the builder's features (the official code reads decoded images; ours
asks for encoded ones and decodes them itself, so the mock encodes them first - a
cost the official side does not pay). imagenet2012's image shape is (None, None, 3), for
which the mock would draw 5-49 px sides; this script fills those dynamic sides with
--source_size (256) instead, so the 224 px row crops from ImageNet-sized sources.

Timing: warm-up loop + timed loops, at the loop boundaries both programs share. The
official loop is one tf.function call of checkpoint_steps steps followed by a
checkpoint, so per-step timing is not observable from outside without editing it;
ours runs the same loop length (steps_per_loop = checkpoint_steps) and also saves
after every loop. Both save through tf.train.CheckpointManager.save, which the child
wraps to record perf_counter() and the process's CPU seconds before and after each save
(a timestamp only; nothing else changes). With L loops of K steps (train_steps = L x K):
loop 1 (dataset creation, tracing, the first K steps) is the warm-up and is not
timed; loops 2..L are timed from the end of the previous save to the start of the
next, so checkpoint writes are excluded (reported separately as save_s) and the
per-loop bookkeeping of each program (metric reads, log line, summaries) is included.
images/s = batch x K x (L - 1) / timed wall seconds; each image is 2 augmented views.
One process with a warm-up loop (rather than the difference of two runs of different
lengths) because two runs would double the children and add their start-up noise to
the difference on a shared machine.

Shared machine. Other jobs may run: measurements alternate (official first in even
rounds, ours first in odd rounds) for --rounds rounds; the table gives best and median
per program and the ratio ours/official of the bests, of the medians and the median of
the per-round ratios (each ours run against the official run of its round). The load
average is recorded before each child and before/after the run; "alone" = logical cpus /
(CPU seconds per image over the timed loops) estimates an idle machine (as
bench_pretrain.py), and "alone ratio" compares those.

--quick: a smoke run of every code path (both datasets, 224 px with blur, host and
device augmentation) with tiny batches, 1 timed step, ResNet-18 in the 224 px row and
1 round by default; its numbers mean nothing.

Prints a Markdown table and writes bench/results/vs_official.json.
"""

import argparse
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
RESULTS = os.path.join(HERE, "results", "vs_official.json")
DEFAULT_OFFICIAL = os.path.join(REPO, "..", "shared", "official_simclr")
sys.path.insert(0, HERE)
from report import cpu_info, machine, machine_line, write_results  # noqa: E402

CHILD_TIMEOUT_S = 2400
RESULT_PREFIX = "BENCH_VS_OFFICIAL_RESULT "

# name -> settings. `run`/`quick`: batch, K = steps per loop (= checkpoint_steps),
# L = loops (the first is the warm-up), and what --quick changes.
NETWORKS = {
    "r18_cifar32": dict(
        title="ResNet-18 CIFAR stem, 32 px", dataset="cifar10", eval_split="test",
        resnet_depth=18, image_size=32, use_blur=False, color_jitter_strength=0.5,
        learning_rate=1.0, weight_decay=1e-4, temperature=0.5, source_size=None,
        run=dict(batch=64, loop_steps=2, loops=4), quick=dict(batch=16, loop_steps=1, loops=2)),
    "r50_224": dict(
        title="ResNet-50, 224 px, blur", dataset="imagenet2012", eval_split="validation",
        resnet_depth=50, image_size=224, use_blur=True, color_jitter_strength=1.0,
        learning_rate=0.3, weight_decay=1e-6, temperature=0.1, source_size=256,
        run=dict(batch=32, loop_steps=1, loops=4),
        quick=dict(batch=4, loop_steps=1, loops=2, resnet_depth=18,
                   title="ResNet-18 (--quick), 224 px, blur")),
}
AUGMENT_ON = ("host", "device")


def settings(network, quick):
    """The network's settings with --quick's changes applied, flat."""
    net = {k: v for k, v in NETWORKS[network].items() if k not in ("run", "quick")}
    net.update(NETWORKS[network]["quick" if quick else "run"])
    return net


def official_flags(net, model_dir):
    """The command line both programs get (official flag names and meanings)."""
    steps = net["loop_steps"] * net["loops"]

    def b(value):
        return "true" if value else "false"
    return [
        "--train_mode=pretrain", "--mode=train", f"--dataset={net['dataset']}",
        "--train_split=train", f"--eval_split={net['eval_split']}",
        f"--train_batch_size={net['batch']}", f"--train_steps={steps}",
        f"--checkpoint_steps={net['loop_steps']}", "--keep_checkpoint_max=1",
        f"--resnet_depth={net['resnet_depth']}", "--width_multiplier=1",
        "--sk_ratio=0", "--se_ratio=0", f"--image_size={net['image_size']}",
        f"--use_blur={b(net['use_blur'])}",
        f"--color_jitter_strength={net['color_jitter_strength']}",
        "--optimizer=lars", "--momentum=0.9", f"--learning_rate={net['learning_rate']}",
        "--learning_rate_scaling=linear", "--warmup_epochs=10",
        f"--weight_decay={net['weight_decay']}", "--batch_norm_decay=0.9",
        f"--temperature={net['temperature']}", "--hidden_norm=true",
        "--proj_head_mode=nonlinear", "--proj_out_dim=128", "--num_proj_layers=3",
        "--ft_proj_selector=0", "--lineareval_while_pretraining=true", "--global_bn=true",
        "--cache_dataset=false", "--use_tpu=false", f"--model_dir={model_dir}",
    ]


def ours_extra_flags(net, augment_on):
    return [f"--augment_on={augment_on}", f"--steps_per_loop={net['loop_steps']}",
            "--knn_monitor_epochs=0", "--probe=none", "--linear_eval_epochs=0"]


def examples_per_split(net):
    """Mock examples per split: a few batches (the shuffle buffer and repeat recycle them)."""
    return max(4 * net["batch"], 64)


# -- child ------------------------------------------------------------------------

def _now():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _write_metadata(data_dir, dataset, splits, num_examples):
    """data_dir/<dataset>/<version>/dataset_info.json with the splits' sizes, no data."""
    import tensorflow_datasets as tfds
    builder = tfds.builder(dataset, data_dir=data_dir)
    infos = [tfds.core.SplitInfo(
        name=split, shard_lengths=[num_examples], num_bytes=0,
        filename_template=tfds.core.ShardedFileTemplate(
            data_dir=builder.data_dir, dataset_name=dataset, split=split,
            filetype_suffix="tfrecord")) for split in splits]
    builder.info.set_splits(tfds.core.SplitDict(infos))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


def _mock_tfds(data_dir, num_examples, source_size):
    """mock_data over data_dir's metadata; dynamic image sides drawn as source_size."""
    import contextlib
    from unittest import mock

    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    stack = contextlib.ExitStack()
    stack.enter_context(tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_FILES,
        data_dir=data_dir))
    if source_size:
        original = mocking.RandomFakeGenerator._generate_random_obj

        def sized(self, feature, tensor_info, rng):
            shape = tuple(tensor_info.shape)
            if isinstance(feature, tfds.features.Image) and None in shape:
                tensor_info = tfds.features.TensorInfo(
                    shape=tuple(source_size if s is None else s for s in shape),
                    dtype=tensor_info.dtype)
            return original(self, feature, tensor_info, rng)
        stack.enter_context(mock.patch.object(
            mocking.RandomFakeGenerator, "_generate_random_obj", sized))
    return stack


def _record_saves(tf, marks):
    """Wraps tf.train.CheckpointManager.save to append (step, before, after) marks."""
    original = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, *args, **kwargs):
        before = _now()
        path = original(self, checkpoint_number, *args, **kwargs)
        after = _now()
        step = checkpoint_number
        if step is not None and not isinstance(step, int):
            step = int(step.numpy()) if hasattr(step, "numpy") else int(step)
        marks.append((step, before, after))
        return path
    tf.train.CheckpointManager.save = save


def child(spec):
    """Runs one measurement in this (fresh) process; prints one JSON line."""
    net = spec["net"]
    official = spec["program"] == "official"
    load_start = os.getloadavg()
    if official:
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise RuntimeError("the official child needs TF_USE_LEGACY_KERAS=1")
        sys.path.insert(0, os.path.join(spec["official"], "tf2"))
    else:
        sys.path.insert(0, REPO)
        import tf_simclr  # noqa: F401  (its environment defaults before TensorFlow loads)
    # isort: split
    import tensorflow as tf
    from absl import flags
    from absl import logging as absl_logging
    from tensorflow.python.util import _pywrap_util_port

    with tempfile.TemporaryDirectory(prefix="bench_vs_official_") as tmp:
        data_dir, model_dir = os.path.join(tmp, "tfds"), os.path.join(tmp, "model")
        num_examples = examples_per_split(net)
        _write_metadata(data_dir, net["dataset"], ("train", net["eval_split"]), num_examples)
        argv = official_flags(net, model_dir)
        if official:
            import run as program  # the snapshot's tf2/run.py, first on sys.path
            tf.compat.v1.enable_v2_behavior()
            tf.config.set_soft_device_placement(True)
            import tf_keras  # what tf.keras is under TF_USE_LEGACY_KERAS=1
            keras_version = tf_keras.__version__
        else:
            import keras

            from tf_simclr import run as program
            argv += ours_extra_flags(net, spec["augment_on"])
            keras_version = keras.__version__
        flags.FLAGS(["bench_vs_official", *argv])
        absl_logging.set_verbosity(absl_logging.INFO)
        marks = []
        _record_saves(tf, marks)
        start = _now()
        with _mock_tfds(data_dir, num_examples, net["source_size"]):
            program.main(["bench_vs_official"])
        end = _now()

    batch, k, loops = net["batch"], net["loop_steps"], net["loops"]
    expected = [k * (i + 1) for i in range(loops)]
    if [m[0] for m in marks] != expected:
        raise RuntimeError(f"expected saves at steps {expected}; got {[m[0] for m in marks]}")
    wall, cpu, previous = [], [], start
    for _, before, after in marks:
        wall.append(before[0] - previous[0])
        cpu.append(before[1] - previous[1])
        previous = after
    timed_wall, timed_cpu = sum(wall[1:]), sum(cpu[1:])
    timed_images = batch * k * (loops - 1)
    print(RESULT_PREFIX + json.dumps({
        "images_per_s": timed_images / timed_wall,
        "loop_s": wall, "loop_cpu_s": cpu, "first_loop_s": wall[0],
        "timed_loops": loops - 1, "timed_steps": k * (loops - 1), "timed_s": timed_wall,
        "save_s": [after[0] - before[0] for _, before, after in marks],
        "cpu_util": timed_cpu / timed_wall, "cpu_s_per_image": timed_cpu / timed_images,
        "images_per_s_if_alone": os.cpu_count() / (timed_cpu / timed_images),
        "after_training_s": end[0] - marks[-1][2][0], "process_s": end[0] - start[0],
        "mock_examples_per_split": num_examples,
        "onednn_enabled": bool(_pywrap_util_port.IsMklEnabled()),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loadavg_child_start": load_start, "loadavg_child_end": os.getloadavg(),
        "tensorflow": tf.__version__, "keras": keras_version, "argv": argv,
    }), flush=True)


# -- parent -----------------------------------------------------------------------

def child_env(program):
    env = dict(os.environ)
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if program == "official":
        env["TF_USE_LEGACY_KERAS"] = "1"
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def failure(log):
    """The exception line of a child's log (else its last lines), without C++ log lines."""
    lines = [line for line in log.splitlines()
             if line.strip() and not re.match(r"^[IWEF]\d{4} |^WARNING: All log", line)]
    raised = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line)]
    return " | ".join((raised[-1:] or lines[-3:]))[-800:]


def run_child(spec):
    row = dict(network=spec["network"], program=spec["program"],
               augment_on=spec.get("augment_on"), round=spec["round"],
               loadavg_before=os.getloadavg())
    begin = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        try:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(spec["program"]),
                cwd=REPO, check=False, timeout=CHILD_TIMEOUT_S)
            returncode, stdout = out.returncode, out.stdout
        except subprocess.TimeoutExpired:
            returncode, stdout = "timeout", ""
        log.seek(0)
        text = log.read()
    row["child_s"] = time.perf_counter() - begin
    found = [line[len(RESULT_PREFIX):] for line in stdout.splitlines()
             if line.startswith(RESULT_PREFIX)]
    if returncode != 0 or not found:
        row["error"] = f"exit {returncode}: {failure(text)}"
        return row
    row.update(json.loads(found[-1]))
    return row


def round_order(round_index, augment_on):
    """Official first in even rounds, ours first (reversed) in odd rounds."""
    order = [("official", None)] + [("ours", a) for a in augment_on]
    return order if round_index % 2 == 0 else order[::-1]


def summarize(rows, network, augment_on):
    """Best/median of the official and of ours (augment_on) and their ratios."""
    def ok(program, aug):
        return [r for r in rows if r["network"] == network and r["program"] == program
                and r.get("augment_on") == aug and "error" not in r]
    official, ours = ok("official", None), ok("ours", augment_on)
    out = {"network": network, "augment_on": augment_on,
           "official_runs": len(official), "ours_runs": len(ours)}
    if not official or not ours:
        return out
    for name, runs in (("official", official), ("ours", ours)):
        ips = [r["images_per_s"] for r in runs]
        alone = [r["images_per_s_if_alone"] for r in runs]
        out[f"{name}_best"], out[f"{name}_median"] = max(ips), statistics.median(ips)
        out[f"{name}_alone_best"] = max(alone)
    out["ratio_best"] = out["ours_best"] / out["official_best"]
    out["ratio_median"] = out["ours_median"] / out["official_median"]
    out["ratio_alone_best"] = out["ours_alone_best"] / out["official_alone_best"]
    per_round = []
    for r in ours:
        same = [o for o in official if o["round"] == r["round"]]
        if same:
            per_round.append(r["images_per_s"] / same[0]["images_per_s"])
    out["ratios_per_round"] = per_round
    out["ratio_per_round_median"] = statistics.median(per_round) if per_round else None
    return out


def print_table(summaries, nets, rows):
    print("| network | batch | timed steps | ours input | official img/s best | median | "
          "ours img/s best | median | ours/official best | median | per-round median | "
          "alone ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        net = nets[s["network"]]
        start = (f"| {net['title']} | {net['batch']} | "
                 f"{net['loop_steps'] * (net['loops'] - 1)} | {s['augment_on']} |")
        if "ratio_best" not in s:
            failed = [r for r in rows if r["network"] == s["network"] and "error" in r
                      and r.get("augment_on") in (None, s["augment_on"])]
            reason = failed[0]["error"][:300].replace("|", "/") if failed else "no runs"
            print(start + f" FAILED ({failed[0]['program'] if failed else '-'}): {reason} |")
            continue
        per_round = s["ratio_per_round_median"]
        print(start + f" {s['official_best']:.2f} | {s['official_median']:.2f} | "
              f"{s['ours_best']:.2f} | {s['ours_median']:.2f} | {s['ratio_best']:.2f}x | "
              f"{s['ratio_median']:.2f}x | "
              f"{f'{per_round:.2f}x' if per_round is not None else '-'} | "
              f"{s['ratio_alone_best']:.2f}x |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--augment_on", nargs="+", choices=AUGMENT_ON, default=list(AUGMENT_ON),
                        help="our augmentation placements to measure (each vs the official)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measurements per program and row (default 2, 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny batches, 1 timed step, ResNet-18 at 224 px")
    parser.add_argument("--official", default=DEFAULT_OFFICIAL,
                        help="the official google-research/simclr snapshot (holds tf2/run.py)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    official = os.path.abspath(args.official)
    if not os.path.isfile(os.path.join(official, "tf2", "run.py")):
        parser.error(f"--official={args.official}: no tf2/run.py there; expected the "
                     "google-research/simclr snapshot (see its ABOUT.md)")
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    if rounds < 1:
        parser.error(f"--rounds={rounds}; expected at least 1")

    cpu = cpu_info()
    nets = {name: settings(name, args.quick) for name in args.only}
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for network in args.only:
        for round_index in range(rounds):
            for program, augment_on in round_order(round_index, args.augment_on):
                spec = dict(network=network, program=program, augment_on=augment_on,
                            round=round_index, net=nets[network], official=official)
                print(f"round {round_index + 1}/{rounds}: {network} {program}"
                      f"{f' (augment_on={augment_on})' if augment_on else ''} ...",
                      file=sys.stderr, flush=True)
                row = run_child(spec)
                print(f"  {row['images_per_s']:.3f} img/s" if "error" not in row
                      else f"  FAILED: {row['error'][:300]}", f"({row['child_s']:.0f} s)",
                      file=sys.stderr, flush=True)
                rows.append(row)
    load_after = os.getloadavg()
    summaries = [summarize(rows, network, a) for network in args.only for a in args.augment_on]

    print_table(summaries, nets, rows)
    # Ours first, so that machine()'s versions are TensorFlow's and Keras 3's.
    ordered = sorted(rows, key=lambda r: r["program"] != "ours")
    print(machine_line(cpu, ordered, load_before, load_after, time.perf_counter() - started))
    official_row = next((r for r in rows if r["program"] == "official" and "keras" in r), {})
    commit_file = os.path.join(official, "COMMIT")
    write_results(RESULTS, {
        "benchmark": "SimCLR pretraining images/s, official google-research/simclr tf2/run.py "
                     "vs tf_simclr.run, same flags and TFDS mock data, CPU",
        "method": {
            "children": "one child process per measurement; official with "
                        "TF_USE_LEGACY_KERAS=1 importing the snapshot's tf2/run.py and "
                        "calling its main(); ours calling tf_simclr.run.main(); rounds "
                        "alternate which program runs first",
            "time": "L loops of K = checkpoint_steps steps (ours: steps_per_loop = K); "
                    "loop 1 (start-up, tracing, K steps) not timed; loops 2..L timed "
                    "from the end of one tf.train.CheckpointManager.save to the start of "
                    "the next (saves excluded, per-loop bookkeeping included); "
                    "images_per_s = batch x K x (L - 1) / timed seconds",
            "images": "images per second; each image is 2 augmented views",
            "data": "tfds.testing.mock_data(policy=USE_FILES) over written metadata with "
                    "mock_examples_per_split per split; imagenet2012's dynamic image sides "
                    "drawn as source_size; random pixels",
            "ratios": "ratio_best = ours best / official best; ratio_median likewise; "
                      "ratios_per_round = each ours run / the official run of its round; "
                      "ratio_alone_best uses images_per_s_if_alone = logical cpus / CPU "
                      "seconds per image",
            "quick": args.quick, "rounds": rounds,
        },
        "official": {"path": official, "tf_keras": official_row.get("keras"),
                     "commit": (open(commit_file, encoding="utf-8").read().strip()
                                if os.path.exists(commit_file) else None)},
        "environment": {k: os.environ.get(k) for k in (
            "TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "TF_XLA_FLAGS",
            "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")},
        "machine": machine(cpu, ordered, load_before, load_after),
        "networks": nets,
        "summary": summaries,
        "rows": rows,
    })


if __name__ == "__main__":
    main()
