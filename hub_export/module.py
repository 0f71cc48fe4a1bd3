"""The TF-Hub reusable SavedModel object of a SimCLRModel (image feature vector).

The route is a hand-written "reusable SavedModel" object (a tf.train.Checkpoint
subclass with a tf.function `__call__` traced for training=True and False, and
`variables` / `trainable_variables` / `regularization_losses` attributes). It is the
route that loads and fine-tunes in `hub.KerasLayer` (tf_keras), loads in Keras 3's
`keras.layers.TFSMLayer` and in `tf.saved_model.load`; Keras 3's `model.export()`
alone gives a module hub.KerasLayer cannot call (stack_experiments.md §2).

What an exported module offers (`obj = tf.saved_model.load(path)` or `hub.load`):

- `obj(images, training=False)` -> final_avg_pool float32 [batch, 2048 * width]
  (512 * width for ResNet-18/34): the TF-Hub image feature vector. `images` are
  float32 [batch, height, width, 3] in [0, 1], any height and width.
  `training=True` runs BatchNorm on batch statistics and updates its moving
  statistics. `obj.variables`, `obj.trainable_variables` (those final_avg_pool
  depends on: the encoder's) and `obj.regularization_losses` (weight_decay *
  L2 of the trainable kernels, zero-argument callables) as the API asks.
- `obj.endpoints(images, training=False)` -> dict of every output under the
  official names: initial_conv, initial_max_pool, block_group1..4, final_avg_pool,
  proj_head_input, proj_head_output (when the model computes it) and logits_sup
  (when it has a classifier), all float32.
- `obj.signatures["serving_default"](images=...)` -> the same dict (inference).
- `obj.call_training(images)` -> the same dict with training=True, the training
  endpoint for `TFSMLayer(..., call_training_endpoint="call_training")`.
- `obj.classifier` (only for models with a supervised head, e.g. fine-tuned ones):
  itself a reusable SavedModel: `obj.classifier(images, training=False)` ->
  logits_sup [batch, num_classes], with the variables of encoder + heads, so
  `hub.KerasLayer(hub.load(path).classifier, trainable=True)` fine-tunes the
  classifier end to end.
- `obj.config_json` (string variable) and `assets/config.json`: the run config the
  module was built from; `obj.feature_dim`, `obj.num_classes`, `obj.image_size`
  (int variables; image_size is the training resolution).

Inputs that are not float32 [batch, height, width, 3] fail with an
InvalidArgumentError that names what was received and what is expected, from every
entry point above, instead of a shape error deep inside the network.

`exporter.export_saved_model` writes it.
"""

import contextlib

import keras
import tensorflow as tf

from tf_simclr.models import simclr as model_lib
from tf_simclr.train import optimizers as optimizers_lib

FEATURES = "final_avg_pool"
LOGITS = model_lib.LOGITS_SUP
SERVING_SIGNATURE = "serving_default"
CONFIG_ASSET = "config.json"
# Dtypes callers plausibly pass by mistake (decoded uint8 images, numpy float64,
# float16 halves, integer tensors). Each gets traced entry points that fail with a
# clear message; other dtypes get TensorFlow's "could not find matching concrete
# function" error, which lists the float32 signatures.
REJECTED_DTYPES = (tf.uint8, tf.int32, tf.float16, tf.float64)
EXPECTED_INPUT = ("expected images as float32 [batch, height, width, 3] with values in "
                  "[0, 1]")
_IMAGES_SPEC = tf.TensorSpec(None, tf.float32, name="images")


# Input checks ---------------------------------------------------------------------

def _checked_images(images):
    """float32 images of unknown shape -> the same with static shape [?, ?, ?, 3].

    The rank and channel checks run before the network: a wrong shape fails with an
    InvalidArgumentError that names the received shape. The tf.cond hides the
    caller's static shape from the network, so a wrong one cannot fail shape
    inference first (with a message about some inner op).
    """
    shape = tf.shape(images)
    ok = tf.logical_and(tf.equal(tf.rank(images), 4),
                        tf.reduce_all(tf.equal(shape[-1:], 3)))
    check = tf.debugging.Assert(
        ok, [f"SimCLR hub module: {EXPECTED_INPUT}; received float32 with shape", shape],
        summarize=8, name="check_images")
    with tf.control_dependencies([check]):
        ok = tf.identity(ok)
    # Both branches are stateless (the Assert sits outside), so the lowered cond
    # needs no control edges, which Grappler would warn about.
    images = tf.cond(ok, lambda: tf.identity(images), lambda: tf.zeros([0, 0, 0, 3]))
    return tf.ensure_shape(images, [None, None, None, 3])


@contextlib.contextmanager
def local_batch_norm(model):
    """Traces BatchNorm(synchronized=True) layers as plain ones, then restores them.

    Keras' synchronized BatchNorm all-reduces its moments through the replica
    context, which outside a strategy is an identity with a custom gradient that
    SavedModels do not keep ("Importing a function ... with ops with unsaved custom
    gradients", official SimCLR #108/#193): gradients through the loaded module
    would fail. A traced module runs on one replica anyway, where both compute the
    same moments (and the same moving-statistic updates).
    """
    flipped = [layer for layer in model._flatten_layers(include_self=True, recursive=True)
               if isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized]
    for layer in flipped:
        layer.synchronized = False
    try:
        yield
    finally:
        for layer in flipped:
            layer.synchronized = True


def _rejecting_outputs(images, output_specs):
    """For a wrong input dtype: outputs shaped like `output_specs` that never return.

    The Assert fails whenever the function runs; the outputs exist only so that
    symbolic callers (a tf_keras functional model) see the usual shapes.
    """
    fail = tf.debugging.Assert(
        False, [f"SimCLR hub module: {EXPECTED_INPUT}; received dtype {images.dtype.name} "
                "with shape", tf.shape(images),
                "(decoded uint8 images: tf.image.convert_image_dtype(images, tf.float32) "
                "scales them to [0, 1]; other floats: tf.cast to float32)"],
        summarize=8, name="check_images_dtype")
    with tf.control_dependencies([fail]):
        batch = tf.shape(images)[0] if images.shape.rank != 0 else tf.constant(0)
        unknown = batch * 0  # a dynamic 0 keeps unknown dims unknown to shape inference

        def zeros(spec):
            dims = [batch] + [tf.constant(d) if d is not None else unknown
                              for d in spec.shape[1:]]
            return tf.zeros(tf.stack(dims), spec.dtype)

        return tf.nest.map_structure(zeros, output_specs)


# The module ---------------------------------------------------------------------

class _ReusableModule(tf.train.Checkpoint):
    """TF-Hub reusable SavedModel: __call__(inputs, training) and its variables.

    A tf.train.Checkpoint rather than a tf.Module, whose `variables` property is
    read-only. `endpoints_fn(images, training)` is a tf.function returning the dict
    of all outputs; `__call__` returns its `output_key` entry.
    """

    def __init__(self, endpoints_fn=None, output_key=None, output_spec=None, variables=(),
                 trainable_variables=(), regularization_losses=()):
        super().__init__()
        self._set_outputs(endpoints_fn, output_key, output_spec, variables,
                          trainable_variables, regularization_losses)

    def _set_outputs(self, endpoints_fn, output_key, output_spec, variables,
                     trainable_variables, regularization_losses):
        self.variables = list(variables)
        self.trainable_variables = list(trainable_variables)
        self.regularization_losses = list(regularization_losses)
        # Closures are not tracked; the endpoints function is saved through its owner.
        self._outputs = lambda: (endpoints_fn, output_key, output_spec)

    @tf.function
    def __call__(self, inputs, training=False):
        endpoints_fn, output_key, output_spec = self._outputs()
        if inputs.dtype != tf.float32:
            return _rejecting_outputs(inputs, output_spec)
        return endpoints_fn(inputs, training=training)[output_key]


class HubModule(_ReusableModule):
    """The exported object: an image feature vector module plus all endpoints."""

    def __init__(self, model, config):
        super().__init__()
        self._model_call = lambda images, training: model(images, training=training)
        self._output_specs = lambda: None
        self.endpoints = tf.function(self._endpoints)
        # Trace the network once per training value; every other entry point calls
        # these concrete functions instead of tracing the network again.
        for training in (False, True):
            concrete = self.endpoints.get_concrete_function(_IMAGES_SPEC, training=training)
        specs = {name: tf.TensorSpec(t.shape, t.dtype)
                 for name, t in concrete.structured_outputs.items()}
        self._output_specs = lambda: specs
        # Tracked so the SavedModel holds every variable an endpoint captures; the
        # hub API's `variables` lists only those of __call__ (the encoder's).
        self.endpoint_variables = list(model.variables)
        encoder_trainable = list(model.encoder.trainable_variables)
        weight_decay = config.optim.weight_decay
        self._set_outputs(self.endpoints, FEATURES, specs[FEATURES], model.encoder.variables,
                          encoder_trainable,
                          _regularization_losses(model, encoder_trainable, weight_decay))
        if LOGITS in specs:
            # What logits_sup can train: the whole (unfrozen) network of a fine-tuned
            # model, but only the linear head of a pretraining model, whose online
            # classifier sits behind a stop_gradient.
            if model.train_mode == "pretrain":
                classifier_trainable = list(model.supervised_head.trainable_variables)
            else:
                classifier_trainable = list(model.trainable_variables)
            self.classifier = _ReusableModule(
                self.endpoints, LOGITS, specs[LOGITS], model.variables, classifier_trainable,
                _regularization_losses(model, classifier_trainable, weight_decay))
        self.call_training = tf.function(
            lambda images: self.endpoints(images, training=True), input_signature=[_IMAGES_SPEC])
        self.serve = tf.function(
            lambda images: self.endpoints(images, training=False), input_signature=[_IMAGES_SPEC])
        self.config_json = tf.Variable(config.to_json(), trainable=False, name="config_json")
        self.feature_dim = tf.Variable(int(specs[FEATURES].shape[-1]), trainable=False,
                                       name="feature_dim")
        num_classes = int(specs[LOGITS].shape[-1]) if LOGITS in specs else 0
        self.num_classes = tf.Variable(num_classes, trainable=False, name="num_classes")
        self.image_size = tf.Variable(config.data.image_size, trainable=False,
                                      name="image_size")

    def _endpoints(self, images, training=False):
        if images.dtype != tf.float32:
            return _rejecting_outputs(images, self._output_specs())
        outputs = self._model_call(_checked_images(images), training)
        return {name: tf.cast(value, tf.float32) for name, value in outputs.items()}

    def trace(self):
        """Traces every entry point the SavedModel must hold (both training values,
        the float32 spec and the rejected dtypes)."""
        modules = [self] + ([self.classifier] if hasattr(self, "classifier") else [])
        for training in (False, True):
            for module in modules:
                module.__call__.get_concrete_function(_IMAGES_SPEC, training=training)
            for dtype in REJECTED_DTYPES:
                spec = tf.TensorSpec(None, dtype, name="images")
                self.endpoints.get_concrete_function(spec, training=training)
                for module in modules:
                    module.__call__.get_concrete_function(spec, training=training)


def _regularization_losses(model, variables, weight_decay):
    """[weight_decay * sum(l2_loss(kernel))] over `variables` minus BN and biases."""
    if not weight_decay:
        return []
    excluded = {id(v) for v in optimizers_lib.decay_exclusions(model)}
    if model.supervised_head is not None:
        # decay_exclusions leaves the head to the loop's decay term; for hub users
        # the classifier kernel is a kernel like the others.
        excluded.discard(id(model.supervised_head.dense.kernel))
    kernels = [v for v in variables if id(v) not in excluded]
    if not kernels:
        return []

    @tf.function(input_signature=[])
    def weight_decay_loss():
        return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])

    return [weight_decay_loss]
