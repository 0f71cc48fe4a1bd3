"""Child process of tests/test_hub_export.py: feature dimensions of exported variants.

    python hub_feature_dims.py OUT.json ROOT NAMES

Loads ROOT/<name> for each comma-separated name and writes {name: output shape}.
"""
import json
import sys

import numpy as np
import tensorflow as tf

out, root, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
x = tf.constant(np.random.rand(2, 64, 64, 3).astype("float32"))
dims = {n: list(tf.saved_model.load(f"{root}/{n}")(x).shape) for n in names}
json.dump(dims, open(out, "w"))
