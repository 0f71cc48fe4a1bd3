"""tf_simclr: SimCLR (v1 and v2) for TensorFlow 2.21 and Keras 3.

TensorFlow itself comes from one of two extras, because the two wheels write the
same `tensorflow/` package and must never both be installed:

    pip install -e ".[cpu]"   # tensorflow-cpu: CPU-only machines
    pip install -e ".[gpu]"   # tensorflow[and-cuda]: machines with NVIDIA GPUs

The TF-Hub consumer side (`tf-keras`, `tensorflow-hub`) declares a dependency on
the `tensorflow` wheel. On a GPU machine `pip install -e ".[gpu,hub]"` is fine. On
a CPU machine install it without dependencies, so that the CUDA wheel does not
land beside tensorflow-cpu (see README.md and .ci/install):

    pip install --no-deps "tf-keras==2.21.*" "tensorflow-hub==0.16.1"
"""

import setuptools

TF_VERSION = "2.21.*"

setuptools.setup(
    name="tf_simclr",
    version="0.1.0",
    description="SimCLR v1/v2 pretraining, linear evaluation, fine-tuning and "
    "TF-Hub export in TensorFlow 2 / Keras 3.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["tf_simclr", "tf_simclr.*",
                                               "hub_export", "hub_export.*"]),
    install_requires=[
        "keras>=3.10",
        "absl-py>=2.0",
        "numpy>=1.26",
        "pillow>=10",
        "tensorflow-datasets==4.9.*",
        # TFDS 4.9.10 imports importlib_resources but declares it only for
        # python<3.9 (stack_experiments.md §5).
        "importlib_resources>=6",
        # TF 2.21 no longer depends on tensorboard; without it tf.summary.scalar
        # raises TBNotInstalledError.
        f"tensorboard=={TF_VERSION}",
        # The probe's L-BFGS (tf_simclr.probe.logistic) and the learning-curve plot.
        "scipy>=1.11",
        "matplotlib>=3.8",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu=={TF_VERSION}"],
        "gpu": [f"tensorflow[and-cuda]=={TF_VERSION}"],
        "hub": [f"tf-keras=={TF_VERSION}", "tensorflow-hub==0.16.1"],
        # scikit-learn: the independent reference solver of the probe's tests.
        "test": ["pytest>=8", "scikit-learn>=1.5", "ruff==0.17.*"],
    },
    entry_points={
        "console_scripts": [
            "tf_simclr=tf_simclr.run:entry_point",
            "tf_simclr_hub_export=hub_export.__main__:entry_point",
            "tf_simclr_probe=tf_simclr.probe.__main__:entry_point",
            "tf_simclr_import_official=tf_simclr.import_official.__main__:entry_point",
        ],
    },
)
