"""Child process of tests/test_hub_export.py: loads and fine-tunes exports with tf_keras.

    python hub_tf_keras_consumer.py OUT.json MODULES_JSON TOLERANCE

hub.KerasLayer (TF_USE_LEGACY_KERAS=1) on each exported module and on the .tar.gz
(over http and through the local resolver), compared with the test's reference
outputs; writes a JSON report.
"""
import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

out_path, modules = sys.argv[1], json.loads(sys.argv[2])
TOL = float(sys.argv[3])
result = {"keras_version": tf_keras.__version__}
tf_keras.utils.set_random_seed(0)

def fine_tune_step(hub_layer, x, head_units=3, fit=False):
    """One SGD step of a tf_keras model built around hub_layer; returns a report."""
    size = x.shape[1]
    inputs = tf_keras.Input((size, size, 3))
    features = hub_layer(inputs)
    logits = tf_keras.layers.Dense(head_units)(features)
    model = tf_keras.Model(inputs, logits)
    report = {"hub_trainable": len(hub_layer.trainable_weights),
              "hub_non_trainable": len(hub_layer.non_trainable_weights),
              "model_losses": len(model.losses),
              "output_shape": list(features.shape)}
    moving = [w for w in hub_layer.weights if "moving_mean" in w.name]
    before_moving = [w.numpy().copy() for w in moving]
    before = [w.numpy().copy() for w in hub_layer.trainable_weights]
    model(x, training=False)
    report["bn_changed_inference"] = sum(
        not np.array_equal(b, w.numpy()) for b, w in zip(before_moving, moving))
    labels = np.arange(len(x)) % head_units
    with tf.GradientTape() as tape:
        out = model(x, training=True)
        loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(
            labels, out, from_logits=True)) + tf.add_n(model.losses)
    grads = tape.gradient(loss, model.trainable_weights)
    hub_ids = {id(w) for w in hub_layer.trainable_weights}
    report["none_grads"] = sum(g is None for g in grads)
    report["hub_grads"] = sum(1 for w, g in zip(model.trainable_weights, grads)
                              if id(w) in hub_ids and g is not None)
    report["hub_grad_norm"] = float(tf.linalg.global_norm(
        [g for w, g in zip(model.trainable_weights, grads) if id(w) in hub_ids]))
    tf_keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_weights))
    report["hub_unchanged"] = [w.name for b, w in zip(before, hub_layer.trainable_weights)
                               if np.array_equal(b, w.numpy())]
    report["bn_changed_training"] = sum(
        not np.array_equal(b, w.numpy()) for b, w in zip(before_moving, moving))
    report["loss"] = float(loss)
    if not fit:
        return report
    # And Keras' own loop.
    model.compile(tf_keras.optimizers.SGD(0.01),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, labels, epochs=1, batch_size=len(x), verbose=0)
    report["fit_loss"] = float(history.history["loss"][0])
    return report

for name, (path, ref_path, has_logits) in modules.items():
    ref = np.load(ref_path)
    x = ref["x_5_32"]
    r = result[name] = {}
    r["features"] = fine_tune_step(hub.KerasLayer(path, trainable=True), x,
                                   fit=name == "pretrain")
    frozen = hub.KerasLayer(path, trainable=False)
    r["frozen_features_diff"] = float(
        np.max(np.abs(frozen(x).numpy() - ref["final_avg_pool_5_32"])))
    r["frozen_trainable"] = len(frozen.trainable_weights)
    if has_logits:
        sig = hub.KerasLayer(path, signature="serving_default", output_key="logits_sup")
        r["signature_logits_diff"] = float(np.max(np.abs(sig(x).numpy() - ref["logits_sup_5_32"])))
        classifier = hub.KerasLayer(hub.load(path).classifier, trainable=True)
        r["classifier_diff"] = float(np.max(np.abs(
            classifier(x, training=False).numpy() - ref["logits_sup_5_32"])))
        if name == "finetune":
            r["classifier"] = fine_tune_step(classifier, x)

# TF-Hub's compressed format, served over HTTP as tfhub.dev / Kaggle do.
tar = os.environ.get("HUB_TARBALL")
if tar:
    import functools
    import http.server
    import threading
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=os.path.dirname(tar))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(tar)}"
    ref = np.load(os.environ["HUB_TARBALL_REF"])
    layer = hub.KerasLayer(url)
    result["tarball_http_diff"] = float(np.max(np.abs(layer(ref["x_2_32"]).numpy()
                                                      - ref["final_avg_pool_2_32"])))
    server.shutdown()
    from hub_export import tarball
    tarball.register_local_resolver()
    layer = hub.KerasLayer(tar, trainable=True)
    result["tarball_local_diff"] = float(np.max(np.abs(layer(ref["x_2_32"]).numpy()
                                                       - ref["final_avg_pool_2_32"])))
json.dump(result, open(out_path, "w"))
