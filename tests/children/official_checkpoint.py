"""Child process: writes an official-format SimCLR checkpoint with random weights.

    TF_USE_LEGACY_KERAS=1 python official_checkpoint.py --official=DIR_OF_OFFICIAL_SIMCLR \
        --format=tf1|tf2|saved_model --out=DIR --images=IMAGES.npy \
        [--depth=50 --width=1 --sk_ratio=0.0625 --image_size=64 --num_classes=10 \
         --num_proj_layers=3 --proj_out_dim=128 --finetune --ft_proj_selector=0|1 \
         --ema --momentum --seed=0]

Drives the unmodified official google-research/simclr code (it is imported and
called, never copied) to build the official model, randomises every variable
(kernels at He scale, BN gammas including the zero-initialised ones, betas,
moving means, positive moving variances, biases, optimizer slots) and writes:

- tf1: DIR/checkpoint, DIR/model.ckpt-250228.{index,data-*,meta} (TF1 graph
  mode: resnet.py + model_util.py under base_model/, head_contrastive/,
  head_supervised/ and global_step; --ema adds
  ema_model/{base_model,head_contrastive}/; --momentum adds <var>/Momentum
  slots; the .meta is the training graph, as tf.estimator wrote it);
- tf2: DIR/checkpoint, DIR/ckpt-1.{index,data-*} (tf.train.Checkpoint(model=,
  global_step=optimizer.iterations, optimizer=) as official tf2/run.py);
- saved_model: DIR/saved_model (official tf2 run.build_saved_model).

In every format also DIR/outputs.npz (the official model's outputs on IMAGES.npy
in inference mode), DIR/variables.json ([name, shape] of every saved variable),
DIR/summary.json (counts per group, ...) and, for tf2/saved_model,
DIR/full_names.json (checkpoint key -> the object graph's full_name).
Needs TF_USE_LEGACY_KERAS=1 (the official code uses tf.keras / tf.layers).

Pass images with structure (smooth patterns, different per image): on i.i.d.
uniform noise the deep outputs are nearly the same for every image (between-image
std ~2-7% of the overall std at final_avg_pool), which makes a weak check.
"""
import argparse
import json
import os
import sys
import time
import warnings
import zlib

START = time.time()
GLOBAL_STEP = 250228
NUM_TRAIN_EXAMPLES = 1281167  # ImageNet train split, for the official LR schedule.
OUTPUT_ORDER = ("initial_conv", "initial_max_pool", "block_group1", "block_group2",
                "block_group3", "block_group4", "final_avg_pool", "proj_head_input",
                "proj_head_output", "sup_head_input", "logits_sup")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True,
                   help="folder of the official google-research/simclr code")
    p.add_argument("--format", required=True, choices=["tf1", "tf2", "saved_model"])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--images", required=True,
                   help=".npy float32 [B, image_size, image_size, 3] in [0, 1]")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--sk_ratio", type=float, default=0.0)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--num_proj_layers", type=int, default=3)
    p.add_argument("--proj_out_dim", type=int, default=128)
    p.add_argument("--finetune", action="store_true",
                   help="train_mode=finetune (else pretrain with linear eval head)")
    p.add_argument("--ft_proj_selector", type=int, default=0)
    p.add_argument("--ema", action="store_true",
                   help="tf1 only: also ema_model/{base_model,head_contrastive}")
    p.add_argument("--momentum", action="store_true",
                   help="also optimizer Momentum slots (tf1, tf2)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.format != "tf1" and args.ema:
        p.error("--ema is only for --format=tf1 (the official TF2 code has no EMA copy)")
    if args.format == "saved_model" and args.momentum:
        p.error("--momentum has no effect on --format=saved_model (the SavedModel holds "
                "the model, not the optimizer): use --format=tf2")
    if args.num_proj_layers < 1:
        p.error("--num_proj_layers must be >= 1 (proj_head_mode=nonlinear)")
    if not 0 <= args.ft_proj_selector <= args.num_proj_layers:
        p.error(f"--ft_proj_selector={args.ft_proj_selector} must be in "
                f"0..{args.num_proj_layers} (--num_proj_layers)")
    return args


def official_flag_argv(args):
    """The official absl flags this configuration needs (both code bases)."""
    return ["official_checkpoint",
            f"--resnet_depth={args.depth}",
            f"--width_multiplier={args.width}",
            f"--sk_ratio={args.sk_ratio}",
            f"--image_size={args.image_size}",
            "--train_mode=" + ("finetune" if args.finetune else "pretrain"),
            f"--ft_proj_selector={args.ft_proj_selector}",
            f"--num_proj_layers={args.num_proj_layers}",
            f"--proj_out_dim={args.proj_out_dim}",
            "--proj_head_mode=nonlinear",
            "--fine_tune_after_block=-1",
            "--se_ratio=0",
            "--global_bn=true",
            "--batch_norm_decay=0.9"]


# ---------------------------------------------------------------- randomisation
def random_value(np, name, value, seed, is_slot=False, salt=0):
    """A random replacement for variable `name` whose current value is `value`.

    Deterministic in (seed, name, salt). The kind is read from the last name
    component (kernel, bias, gamma, beta, moving_mean, moving_variance); gammas
    that are all zero (official init_zero BNs) get a smaller positive range.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), salt])
    shape, dtype = value.shape, value.dtype
    if dtype.kind in "iu":  # global_step / iterations
        return np.full(shape, GLOBAL_STEP, dtype)
    leaf = name.split(":")[0].split("/.ATTRIBUTES")[0].rstrip("/").rsplit("/", 1)[-1]
    if is_slot:
        return (0.01 * rng.standard_normal(shape)).astype(dtype)
    if leaf == "kernel" or leaf.startswith("kernel"):
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        gain = 2.0 if len(shape) == 4 else 1.0  # He scale for convs (ReLU follows)
        return (np.sqrt(gain / fan_in) * rng.standard_normal(shape)).astype(dtype)
    if leaf == "gamma":
        if not np.any(value):  # official init_zero gamma (last BN of a block)
            return rng.uniform(0.2, 0.6, shape).astype(dtype)
        return rng.uniform(0.5, 1.5, shape).astype(dtype)
    if leaf == "beta":
        return rng.uniform(-0.2, 0.2, shape).astype(dtype)
    if leaf == "moving_mean":
        return rng.uniform(-0.2, 0.2, shape).astype(dtype)
    if leaf == "moving_variance":
        return rng.uniform(0.5, 1.5, shape).astype(dtype)
    if leaf == "bias":
        return rng.uniform(-0.1, 0.1, shape).astype(dtype)
    raise ValueError(f"do not know how to randomise variable {name} {list(shape)}")


# ---------------------------------------------------------------- bookkeeping
def categorise(name, shape, full_name=None):
    """Group of one checkpoint entry, for the summary counts."""
    n = full_name or name
    if "Momentum" in name or ".OPTIMIZER_SLOT" in name:
        return "Momentum"
    if n.startswith("ema_model/"):
        return "ema"
    if "head_supervised" in n or "supervised_head" in n:
        return "supervised"
    if "head_contrastive" in n or "projection_head" in n:
        return "head"
    leaf = n.split("/.ATTRIBUTES")[0].split(":")[0].rsplit("/", 1)[-1]
    if leaf == "kernel" and len(shape) == 4:
        return "conv"
    if leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
        return "bn"
    return "other"


def write_listing(tf, out_dir, prefix, args, extra):
    """variables.json, full_names.json (TF2), summary.json; returns the summary."""
    listing = [[n, list(s)] for n, s in tf.train.list_variables(prefix)
               if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    full_names = {}
    reader = tf.train.load_checkpoint(prefix)
    if reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"):
        from tensorflow.core.protobuf import trackable_object_graph_pb2
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
        for node in graph.nodes:
            for attr in node.attributes:
                full_names[attr.checkpoint_key] = attr.full_name
        with open(os.path.join(out_dir, "full_names.json"), "w") as f:
            json.dump(full_names, f, indent=0)
    with open(os.path.join(out_dir, "variables.json"), "w") as f:
        json.dump(listing, f, indent=0)
    counts = {}
    for n, s in listing:
        group = categorise(n, s, full_names.get(n))
        counts[group] = counts.get(group, 0) + 1
    bn_layers = sum(1 for n, _ in listing
                    if "moving_mean" in (full_names.get(n) or n)
                    and categorise(n, [], full_names.get(n)) == "bn")
    summary = {"format": args.format, "prefix": os.path.relpath(prefix, out_dir),
               "variables": len(listing), "counts": counts, "bn_layers": bn_layers,
               "config": {k: v for k, v in vars(args).items()
                          if k not in ("official", "out", "images")}}
    summary.update(extra)
    return summary


def save_outputs(np, out_dir, outputs):
    ordered = {k: np.asarray(outputs[k], np.float32) for k in sorted(
        outputs, key=lambda k: (OUTPUT_ORDER.index(k) if k in OUTPUT_ORDER
                                else len(OUTPUT_ORDER), k))}
    for k, v in ordered.items():
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"official output {k} is not finite")
    np.savez(os.path.join(out_dir, "outputs.npz"), **ordered)
    return {k: {"shape": list(v.shape), "max_abs": float(np.max(np.abs(v))),
                "std": float(np.std(v))} for k, v in ordered.items()}


# ---------------------------------------------------------------- TF1
def define_tf1_flags(flags):
    """The absl flags official resnet.py / model_util.py read (defined by the
    official TF1 run.py, which cannot be imported on TF 2.21)."""
    flags.DEFINE_integer("resnet_depth", 50, "")
    flags.DEFINE_integer("width_multiplier", 1, "")
    flags.DEFINE_float("sk_ratio", 0.0, "")
    flags.DEFINE_float("se_ratio", 0.0, "")
    flags.DEFINE_integer("image_size", 224, "")
    flags.DEFINE_string("train_mode", "pretrain", "")
    flags.DEFINE_integer("fine_tune_after_block", -1, "")
    flags.DEFINE_string("proj_head_mode", "nonlinear", "")
    flags.DEFINE_integer("proj_out_dim", 128, "")
    flags.DEFINE_integer("num_proj_layers", 3, "")
    flags.DEFINE_integer("ft_proj_selector", 0, "")
    flags.DEFINE_boolean("global_bn", True, "")
    flags.DEFINE_float("batch_norm_decay", 0.9, "")


def build_tf1_graph(tf1, resnet, model_util, args, is_training, with_optimizer):
    """Official TF1 network (model.py's model_fn without tf.estimator); returns
    (tensors, global_step or None). The training graph always has global_step
    (as the released checkpoints)."""
    images = tf1.placeholder(tf1.float32, [None, args.image_size, args.image_size, 3],
                             name="images")
    global_step = tf1.train.get_or_create_global_step() if is_training else None
    net = resnet.resnet_v1(resnet_depth=args.depth, width_multiplier=args.width,
                           cifar_stem=args.image_size <= 32)
    with tf1.variable_scope("base_model"):
        hiddens = net(images, is_training=is_training)
    head_out = model_util.projection_head(hiddens, is_training)
    if args.finetune:  # model.py: supervised_head(projection_head(h)) with the selector
        sup_input = head_out
    else:  # linear eval while pretraining: on the encoder output, no gradient back
        sup_input = tf1.stop_gradient(hiddens)
    logits = model_util.supervised_head(sup_input, args.num_classes, is_training)
    tensors = {"images": images, "final_avg_pool": hiddens, "proj_head_input": hiddens,
               "sup_head_input": sup_input, "logits_sup": logits}
    last = args.num_proj_layers - 1
    graph = tf1.get_default_graph()
    tensors["proj_head_output"] = graph.get_tensor_by_name(
        f"head_contrastive/nl_{last}/nl_{last}_out:0")
    for name in ("initial_conv", "initial_max_pool", "block_group1", "block_group2",
                 "block_group3", "block_group4"):
        tensors[name] = graph.get_tensor_by_name(f"base_model/{name}:0")
    if with_optimizer:
        loss = tf1.reduce_mean(tf1.square(logits))
        if args.finetune:  # model.py: only the collections (base_model, head_supervised)
            var_list = []
            for j in range(0, 6):
                var_list += tf1.get_collection(f"trainable_variables_inblock_{j}")
        else:
            loss += tf1.reduce_mean(tf1.square(tensors["proj_head_output"]))
            var_list = tf1.trainable_variables()
        optimizer = tf1.train.MomentumOptimizer(0.1, 0.9, use_nesterov=True)
        with tf1.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)):
            optimizer.minimize(loss, global_step=global_step, var_list=var_list)
    if args.ema:  # the EMA copy of encoder + projection head (no optimizer slots)
        with tf1.variable_scope("ema_model"):
            with tf1.variable_scope("base_model"):
                ema_hiddens = net(images, is_training=is_training)
            model_util.projection_head(ema_hiddens, is_training)
        tensors["ema_final_avg_pool"] = ema_hiddens
        tensors["ema_proj_head_output"] = graph.get_tensor_by_name(
            f"ema_model/head_contrastive/nl_{last}/nl_{last}_out:0")
    return tensors, global_step


def run_tf1(args, images):
    sys.path.insert(0, args.official)
    import numpy as np
    import tensorflow as tf
    from absl import flags
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    tf1.disable_resource_variables()  # as the TF1.x runs that wrote the releases
    define_tf1_flags(flags)
    import model_util  # official
    import resnet  # official
    flags.FLAGS(official_flag_argv(args))

    prefix_base = os.path.join(args.out, "model.ckpt")
    # 1. The training graph (as tf.estimator's TRAIN model_fn): saved with its .meta.
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(args.seed)
        build_tf1_graph(tf1, resnet, model_util, args, is_training=True,
                        with_optimizer=args.momentum)
        variables = tf1.global_variables()
        slots = {v.op.name for v in variables if v.op.name.endswith("/Momentum")}
        saver = tf1.train.Saver(max_to_keep=1, save_relative_paths=True)
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            # Feed the initial values of the variables' own initializers: no new
            # ops in the saved graph, and one session call (one per variable
            # would prune the large graph each time: minutes).
            feed = {}
            for var, value in zip(variables, sess.run(variables)):
                initial = var.initializer.inputs[1]
                if initial in feed:
                    raise RuntimeError(f"{var.op.name} shares its initial value tensor")
                feed[initial] = random_value(np, var.op.name, value, args.seed,
                                             is_slot=var.op.name in slots)
            sess.run([v.initializer for v in variables], feed)
            prefix = saver.save(sess, prefix_base, global_step=GLOBAL_STEP)
    # 2. Which tensor feeds the supervised head, read back from the saved .meta.
    from tensorflow.core.protobuf import meta_graph_pb2
    meta = meta_graph_pb2.MetaGraphDef()
    with open(prefix + ".meta", "rb") as f:
        meta.ParseFromString(f.read())
    matmul = {n.name: list(n.input) for n in meta.graph_def.node}.get(
        "head_supervised/linear_layer/dense/MatMul")
    # 3. Inference outputs: a fresh is_training=False graph restored from the checkpoint.
    graph = tf.Graph()
    with graph.as_default():
        tensors, _ = build_tf1_graph(tf1, resnet, model_util, args, is_training=False,
                                     with_optimizer=False)
        with tf1.Session(graph=graph) as sess:
            tf1.train.Saver().restore(sess, prefix)
            fetch = {k: v for k, v in tensors.items() if k != "images"}
            outputs = sess.run(fetch, {tensors["images"]: images})
    return prefix, outputs, {"meta_head_supervised_matmul_inputs": matmul}


# ---------------------------------------------------------------- TF2
def run_tf2(args, images):
    sys.path.insert(0, os.path.join(args.official, "tf2"))
    import model as model_lib  # official tf2
    import numpy as np
    import run as official_run  # official tf2: defines all the absl flags
    import tensorflow as tf
    from absl import flags
    flags.FLAGS(official_flag_argv(args))
    tf.random.set_seed(args.seed)

    x = tf.constant(images)
    model = model_lib.Model(args.num_classes)
    model(x, training=False)
    learning_rate = model_lib.WarmUpAndCosineDecay(flags.FLAGS.learning_rate,
                                                   NUM_TRAIN_EXAMPLES)
    optimizer = model_lib.build_optimizer(learning_rate)
    global_step = optimizer.iterations
    if args.momentum:  # one official-style step so the LARS Momentum slots exist
        with tf.GradientTape() as tape:
            proj, logits = model(x, training=True)
            loss = tf.reduce_mean(tf.square(logits))
            if proj is not None:
                loss += tf.reduce_mean(tf.square(proj))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    slot_ids = set()
    if args.momentum:
        for var in model.trainable_variables:
            for name in optimizer.get_slot_names():
                try:
                    slot_ids.add(id(optimizer.get_slot(var, name)))
                except KeyError:  # no gradient, no slot (e.g. unused head layers)
                    pass
    to_randomise = list(model.variables) + [
        v for v in optimizer.variables() if id(v) in slot_ids]
    for i, var in enumerate(to_randomise):
        var.assign(random_value(np, var.name, var.numpy(), args.seed,
                                is_slot=id(var) in slot_ids, salt=i))
    global_step.assign(GLOBAL_STEP)

    extra = {}
    if args.format == "tf2":
        @tf.function
        def infer(inputs):
            model(inputs, training=False)
            return official_run.get_salient_tensors_dict(include_projection_head=True)
        outputs = {k: v.numpy() for k, v in infer(x).items()}
        checkpoint = tf.train.Checkpoint(model=model, global_step=global_step,
                                         optimizer=optimizer)
        prefix = checkpoint.save(os.path.join(args.out, "ckpt"))
    else:
        module = official_run.build_saved_model(model)
        outputs = {k: v.numpy() for k, v in module(x, trainable=False).items()}
        export_dir = os.path.join(args.out, "saved_model")
        tf.saved_model.save(module, export_dir)
        prefix = os.path.join(export_dir, "variables", "variables")
        loaded = tf.saved_model.load(export_dir)
        reloaded = loaded(x, trainable=False)
        # The reloaded SavedModel recomputes the outputs: relative max |diff|.
        extra["saved_model_reload_rel_diff"] = {
            k: float(np.max(np.abs(reloaded[k].numpy() - outputs[k]))
                     / max(float(np.max(np.abs(outputs[k]))), 1e-12)) for k in outputs}
        extra["saved_model_trainable_variables_list"] = len(
            loaded.trainable_variables_list)
    return prefix, outputs, extra


def main(argv=None):
    args = parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("official_checkpoint.py: set TF_USE_LEGACY_KERAS=1 in the environment: "
                 "the official SimCLR code needs tf.keras = tf_keras (and tf.layers for TF1)")
    need = "resnet.py" if args.format == "tf1" else os.path.join("tf2", "model.py")
    if not os.path.isfile(os.path.join(args.official, need)):
        sys.exit(f"official_checkpoint.py: --official={args.official} has no {need}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    images = np.load(args.images)
    expected = (args.image_size, args.image_size, 3)
    if images.ndim != 4 or images.shape[1:] != expected:
        sys.exit(f"official_checkpoint.py: --images={args.images} has shape "
                 f"{list(images.shape)}, expected [B, {', '.join(map(str, expected))}]")
    images = images.astype(np.float32)
    os.makedirs(args.out, exist_ok=True)
    from absl import logging
    logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*is deprecated")

    runner = run_tf1 if args.format == "tf1" else run_tf2
    prefix, outputs, extra = runner(args, images)
    import tensorflow as tf
    extra["outputs"] = save_outputs(np, args.out, outputs)
    summary = write_listing(tf, args.out, prefix, args, extra)
    summary["seconds"] = round(time.time() - START, 1)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"official_checkpoint: format={args.format} variables={summary['variables']} "
          f"seconds={summary['seconds']} out={args.out}", flush=True)


if __name__ == "__main__":
    main()
