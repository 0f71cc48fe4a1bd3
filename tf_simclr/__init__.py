"""tf_simclr: SimCLR v1/v2 (Chen et al. 2020) in TensorFlow 2 / Keras 3.

Importing the package sets two environment defaults before TensorFlow loads,
unless the caller set them: TF_ENABLE_ONEDNN_OPTS=1 (oneDNN is off by default on
AMD CPUs and is the faster setting on CPUs, see bench/README.md) and
TF_CPP_MIN_LOG_LEVEL=2 (no C++ info lines).
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
