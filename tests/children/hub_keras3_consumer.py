"""Child process of tests/test_hub_export.py: loads exports with Keras 3.

    python hub_keras3_consumer.py OUT.json RUNS_JSON TOLERANCE

tf.saved_model.load and keras.layers.TFSMLayer on each exported module, compared with
the reference outputs the test computed with the Keras model; writes a JSON report.
"""
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras
import numpy as np
import tensorflow as tf

out_path, modules = sys.argv[1], json.loads(sys.argv[2])
TOL = float(sys.argv[3])
result = {}

def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))

def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa
        return [type(e).__name__, str(e)]
    return None

for name, (path, ref_path) in modules.items():
    ref = np.load(ref_path)
    keys = sorted({k.rsplit("_", 2)[0] for k in ref.files if not k.startswith("x_")})
    r = result[name] = {"keys": keys, "diffs": {}, "shapes": {}}
    m = tf.saved_model.load(path)
    r["attrs"] = {a: hasattr(m, a) for a in ("variables", "trainable_variables",
                  "regularization_losses", "endpoints", "call_training", "classifier")}
    r["signatures"] = sorted(m.signatures)
    r["n_variables"] = len(m.variables)
    r["n_trainable"] = len(m.trainable_variables)
    if hasattr(m, "classifier"):
        r["classifier_trainable"] = len(m.classifier.trainable_variables)
    r["reg_losses"] = [float(f()) for f in m.regularization_losses]
    r["feature_dim"] = int(m.feature_dim.numpy())
    r["num_classes"] = int(m.num_classes.numpy())
    r["config_json"] = json.loads(m.config_json.numpy().decode())
    r["asset_config"] = json.loads(open(os.path.join(path, "assets", "config.json")).read())
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default",
                                   call_training_endpoint="call_training")
    for xk in [k for k in ref.files if k.startswith("x_")]:
        suffix = xk[2:]
        x = ref[xk]
        d = r["diffs"][suffix] = {}
        d["call"] = maxdiff(m(tf.constant(x), training=False), ref["final_avg_pool_" + suffix])
        r["shapes"][suffix] = list(m(tf.constant(x)).shape)
        eps = m.endpoints(tf.constant(x), training=False)
        sig = m.signatures["serving_default"](images=tf.constant(x))
        tfsm = layer(x, training=False)
        d["endpoint_keys"] = sorted(eps) == keys and sorted(sig) == keys and sorted(tfsm) == keys
        for k in keys:
            want = ref[f"{k}_{suffix}"]
            d["endpoints/" + k] = maxdiff(eps[k], want)
            d["signature/" + k] = maxdiff(sig[k], want)
            d["tfsm/" + k] = maxdiff(tfsm[k], want)
        if "logits_sup" in keys:
            d["classifier"] = maxdiff(m.classifier(tf.constant(x), training=False),
                                      ref["logits_sup_" + suffix])
    # BatchNorm statistics move only in training, through TFSMLayer and __call__.
    x = ref[[k for k in ref.files if k.startswith("x_")][0]]
    moving = [v for v in layer.non_trainable_weights if "moving_mean" in v.path]
    r["tfsm_trainable_weights"] = len(layer.trainable_weights)
    r["tfsm_moving"] = len(moving)
    before = [v.numpy().copy() for v in moving]
    layer(x, training=False)
    r["tfsm_bn_changed_inference"] = sum(not np.array_equal(b, v.numpy())
                                         for b, v in zip(before, moving))
    layer(x, training=True)
    r["tfsm_bn_changed_training"] = sum(not np.array_equal(b, v.numpy())
                                        for b, v in zip(before, moving))
    # Wrong inputs: clear errors from every entry point.
    x4 = x[:2]
    bad = {"uint8": (x4 * 255).astype(np.uint8), "float64": x4.astype(np.float64),
           "rank3": x4[0], "channels1": x4[..., :1],
           "channels4": np.concatenate([x4, x4[..., :1]], axis=-1)}
    r["errors"] = {}
    for bname, b in bad.items():
        r["errors"][bname] = {
            "call": error_of(lambda: m(tf.constant(b), training=False)),
            "call_training": error_of(lambda: m(tf.constant(b), training=True)),
            "endpoints": error_of(lambda: m.endpoints(tf.constant(b), training=False)),
            "signature": error_of(lambda: m.signatures["serving_default"](images=tf.constant(b))),
            "tfsm": error_of(lambda: layer(b)),
        }
json.dump(result, open(out_path, "w"))
