"""SimCLR heads: the projection head g(.) and the supervised (linear) head.

Both follow the official `LinearLayer` (google-research/simclr tf2/model.py): Dense
layers with N(0, 0.01) kernels; when a BatchNorm follows, the Dense has no bias and
the BN carries it as beta (`center=use_bias`). Every projection layer has a BN, as in
the official code (the papers do not mention it; issue #205).

Unlike tf2/model.py, the 'linear' and 'none' modes work (official TF2 returned None or
a single tensor where a list was unpacked).
"""

import keras
import tensorflow as tf

from tf_simclr.config import PROJ_HEAD_MODES
from tf_simclr.models.layers import batch_norm


def _dense(units, use_bias, name, dtype):
    return keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        name=name, dtype=dtype)


class ProjectionLayer(keras.layers.Layer):
    """Dense(units, no bias) -> BN(center) [-> ReLU]: [B, D] -> [B, units]."""

    def __init__(self, units, center, relu, batch_norm_decay, global_bn, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.relu = relu
        self.dense = _dense(units, False, "dense", self.dtype_policy)
        self.bn = batch_norm(batch_norm_decay, global_bn, center=center, name="bn",
                             dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.bn.build((None, self.units))

    def call(self, inputs, training=None):
        outputs = self.bn(self.dense(inputs), training=training)
        return tf.nn.relu(outputs) if self.relu else outputs


@keras.saving.register_keras_serializable(package="tf_simclr")
class ProjectionHead(keras.layers.Layer):
    """The "hiddens list" of SimCLR: h [B, D] -> [h, out_0, ..., out_{L-1}].

    Index 0 is `proj_head_input` (the encoder features), index -1 is `proj_head_output`
    (the contrastive embedding); `ft_proj_selector` picks the fine-tuning input by index.

    Args:
        mode: 'nonlinear': layers 0..L-2 are Dense(D) BN ReLU [B, D], the last is
            Dense(out_dim) BN(no beta) [B, out_dim] (L = num_layers; 3 is SimCLRv2,
            2 is SimCLRv1). 'linear': one Dense(out_dim) BN(no beta). 'none': no layers,
            the list is [h].
        out_dim: width of the last layer.
        num_layers: L, used by 'nonlinear' only.
        batch_norm_decay: BatchNorm momentum.
        global_bn: synchronise BatchNorm statistics across replicas.

    The layers are the attributes layer_0..layer_{L-1}; D is known once built.
    """

    def __init__(self, mode="nonlinear", out_dim=128, num_layers=3, batch_norm_decay=0.9,
                 global_bn=True, **kwargs):
        if mode not in PROJ_HEAD_MODES:
            raise ValueError(f"ProjectionHead mode={mode!r} is not supported; expected one of "
                             f"{PROJ_HEAD_MODES}.")
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"ProjectionHead out_dim={out_dim!r}; expected an int >= 1.")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"ProjectionHead num_layers={num_layers!r}; expected an int >= 1.")
        super().__init__(**kwargs)
        self.mode = mode
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.batch_norm_decay = batch_norm_decay
        self.global_bn = global_bn
        self.linear_layers = []
        self._input_dim = None

    @property
    def num_linear_layers(self):
        """How many layers the mode uses: 0 ('none'), 1 ('linear') or num_layers."""
        return {"none": 0, "linear": 1, "nonlinear": self.num_layers}[self.mode]

    def hiddens_index(self, selector):
        """The non-negative index into the hiddens list that `selector` (e.g. -1) names."""
        count = self.num_linear_layers + 1
        if not isinstance(selector, int) or not -count <= selector < count:
            raise ValueError(
                f"ft_proj_selector={selector!r} does not name an entry of the hiddens list "
                f"of a '{self.mode}' head with {self.num_linear_layers} layer(s); expected an "
                f"int in [{-count}, {count - 1}].")
        return selector % count

    @property
    def hidden_dims(self):
        """Widths of the hiddens list [D, ..., out_dim]; needs the head to be built."""
        if self._input_dim is None:
            raise ValueError(f"{self.name} is not built yet; its widths depend on the input.")
        return [self._input_dim] + [layer.units for layer in self.linear_layers]

    def build(self, input_shape):
        self._input_dim = int(input_shape[-1])
        last = self.num_linear_layers - 1
        for index in range(self.num_linear_layers):
            # 'nonlinear' hidden layers keep the input width and have beta (official
            # use_bias=True); the last layer has out_dim and no beta.
            is_last = index == last
            layer = ProjectionLayer(
                self.out_dim if is_last else self._input_dim, center=not is_last,
                relu=not is_last, batch_norm_decay=self.batch_norm_decay,
                global_bn=self.global_bn, name=f"layer_{index}", dtype=self.dtype_policy)
            layer.build((None, self._input_dim))
            setattr(self, f"layer_{index}", layer)  # the checkpoint key
            self.linear_layers.append(layer)

    def call(self, inputs, training=None, num_layers=None):
        """Runs the first `num_layers` layers (all if None); returns num_layers + 1 tensors."""
        hiddens = [inputs]
        for layer in self.linear_layers[:num_layers]:
            hiddens.append(layer(hiddens[-1], training=training))
        return hiddens

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, out_dim=self.out_dim, num_layers=self.num_layers,
                      batch_norm_decay=self.batch_norm_decay, global_bn=self.global_bn)
        return config


@keras.saving.register_keras_serializable(package="tf_simclr")
class SupervisedHead(keras.layers.Layer):
    """Linear classifier: features [B, D] -> logits [B, num_classes] (Dense with bias).

    The official `head_supervised`: N(0, 0.01) kernel, zero bias, no BN. Its Dense is
    the attribute `dense`.
    """

    def __init__(self, num_classes, **kwargs):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"SupervisedHead num_classes={num_classes!r}; expected an int >= 1.")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dense = _dense(num_classes, True, "dense", self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.dense(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config
