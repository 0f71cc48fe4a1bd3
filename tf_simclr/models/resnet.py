"""ResNet v1 encoders for SimCLR: depths 18-200, width multipliers, SK and SE variants.

The post-activation ResNet of He et al. (2016, arXiv:1512.03385) as the official
SimCLR code builds it (google-research/simclr `resnet.py`, `tf2/resnet.py`):
- the stride of a bottleneck sits on its 3x3 convolution ("v1.5");
- strided convolutions use "fixed padding": pad (k-1) split begin/end, then VALID;
- the first block of every group has a projection shortcut (1x1 conv + BN), also
  group 1 of ResNet-18/34 where the channel count already matches;
- the last BatchNorm of every block starts with gamma = 0;
- convolutions have no bias and VarianceScaling (fan_in, truncated normal) init.

`sk_ratio > 0` gives the SimCLRv2 "SK" models: a ResNet-D stem and ResNet-D shortcuts
(He et al. 2019, arXiv:1812.01187) and selective-kernel 3x3 convolutions in the
bottlenecks (Li et al. 2019, arXiv:1903.06586). As in tf2/resnet.py, ResNet-18/34
blocks get the ResNet-D shortcut on their shortcut path only (TF1 average-pooled the
main path too) and keep plain 3x3 convolutions. `se_ratio > 0` adds
squeeze-and-excitation (Hu et al. 2018, arXiv:1709.01507) before each residual add.

Every sub-layer is an attribute of its parent: Keras 3 hides layers that are only held
in a list from `tf.train.Checkpoint`, so attribute names are the checkpoint keys, e.g.
`encoder/block_group2/block1/conv2/_kernel`. Variable paths repeat the layer names,
e.g. `resnet/block_group2/block1/conv2/kernel`.
"""

import keras
import tensorflow as tf

from tf_simclr.models.layers import (
    SelectiveKernelConv2D,
    SqueezeExcitation,
    apply_conv,
    batch_norm,
    conv,
    fixed_pad,
    nhwc,
)

ENDPOINTS = ("initial_conv", "initial_max_pool", "block_group1", "block_group2",
             "block_group3", "block_group4", "final_avg_pool")
# depth -> (block type, blocks per group)
DEPTHS = {
    18: ("residual", (2, 2, 2, 2)),
    34: ("residual", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
GROUP_FILTERS = (64, 128, 256, 512)
GROUP_STRIDES = (1, 2, 2, 2)
NUM_STAGES = 5  # the stem (stage 0) and four block groups


def scaled_filters(base, width_multiplier):
    """round(base * width_multiplier), at least 1."""
    return max(1, int(round(base * width_multiplier)))


class ProjectionShortcut(keras.layers.Layer):
    """Shortcut of a group's first block: 1x1 conv (stride s) + BN without ReLU.

    ResNet-D instead average-pools 2x2 with stride s (after fixed padding when s > 1;
    SAME, i.e. a 2x2 smoothing, when s == 1, as official) and then convolves with stride 1.
    """

    def __init__(self, filters, strides, resnet_d, batch_norm_decay, global_bn, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        dtype = self.dtype_policy
        self.pool = None
        if resnet_d:
            self.pool = keras.layers.AveragePooling2D(
                2, strides, padding="same" if strides == 1 else "valid", name="pool",
                dtype=dtype)
        self.conv = conv(filters, 1, 1 if resnet_d else strides, name="conv", dtype=dtype)
        self.bn = batch_norm(batch_norm_decay, global_bn, name="bn", dtype=dtype)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(nhwc(self.filters))

    def call(self, inputs, training=None):
        if self.pool is not None:
            if self.strides > 1:
                inputs = fixed_pad(inputs, 2)
            inputs = self.pool(inputs)
        return self.bn(apply_conv(self.conv, inputs), training=training)


class _Block(keras.layers.Layer):
    """relu(residual(x) [* SE gate] + shortcut(x)); subclasses define the residual path."""

    expansion = 1

    def __init__(self, filters, strides, use_projection, sk_ratio, se_ratio,
                 batch_norm_decay, global_bn, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.out_channels = filters * self.expansion
        self._bn_args = (batch_norm_decay, global_bn)
        self.shortcut = None
        if use_projection:
            self.shortcut = ProjectionShortcut(
                self.out_channels, strides, sk_ratio > 0, batch_norm_decay, global_bn,
                name="shortcut", dtype=self.dtype_policy)
        self.se = None
        if se_ratio > 0:
            self.se = SqueezeExcitation(max(1, int(filters * se_ratio)), self.out_channels,
                                        name="se", dtype=self.dtype_policy)

    def _bn(self, name, zero_gamma=False):
        return batch_norm(*self._bn_args, zero_gamma=zero_gamma, name=name,
                          dtype=self.dtype_policy)

    def build(self, input_shape):
        if self.shortcut is None and (input_shape[-1] != self.out_channels or self.strides != 1):
            raise ValueError(
                f"A block without projection shortcut needs stride 1 and "
                f"{self.out_channels} input channels; received strides={self.strides} and "
                f"input_shape={input_shape}.")
        if self.shortcut is not None:
            self.shortcut.build(input_shape)
        if self.se is not None:
            self.se.build(nhwc(self.out_channels))
        self._build_residual(input_shape[-1])

    def call(self, inputs, training=None):
        shortcut = inputs
        if self.shortcut is not None:
            shortcut = self.shortcut(inputs, training=training)
        residual = self._residual(inputs, training)
        if self.se is not None:
            residual = self.se(residual)
        return tf.nn.relu(residual + shortcut)


class ResidualBlock(_Block):
    """ResNet-18/34 block: 3x3 (stride s) BN-ReLU, 3x3 BN(gamma=0); F output channels."""

    def __init__(self, filters, strides, use_projection, sk_ratio, se_ratio,
                 batch_norm_decay, global_bn, **kwargs):
        super().__init__(filters, strides, use_projection, sk_ratio, se_ratio,
                         batch_norm_decay, global_bn, **kwargs)
        dtype = self.dtype_policy
        self.conv1 = conv(filters, 3, strides, name="conv1", dtype=dtype)
        self.bn1 = self._bn("bn1")
        self.conv2 = conv(filters, 3, name="conv2", dtype=dtype)
        self.bn2 = self._bn("bn2", zero_gamma=True)

    def _build_residual(self, in_channels):
        self.conv1.build(nhwc(in_channels))
        self.bn1.build(nhwc(self.filters))
        self.conv2.build(nhwc(self.filters))
        self.bn2.build(nhwc(self.filters))

    def _residual(self, inputs, training):
        x = tf.nn.relu(self.bn1(apply_conv(self.conv1, inputs), training=training))
        return self.bn2(self.conv2(x), training=training)


class BottleneckBlock(_Block):
    """ResNet-50+ block: 1x1 BN-ReLU, 3x3 or SK (stride s) BN-ReLU, 1x1 to 4F BN(gamma=0)."""

    expansion = 4

    def __init__(self, filters, strides, use_projection, sk_ratio, se_ratio,
                 batch_norm_decay, global_bn, **kwargs):
        super().__init__(filters, strides, use_projection, sk_ratio, se_ratio,
                         batch_norm_decay, global_bn, **kwargs)
        dtype = self.dtype_policy
        self.conv1 = conv(filters, 1, name="conv1", dtype=dtype)
        self.bn1 = self._bn("bn1")
        if sk_ratio > 0:
            # The SK conv ends with its own BN-ReLU.
            self.conv2 = SelectiveKernelConv2D(filters, strides, sk_ratio, batch_norm_decay,
                                               global_bn, name="sk_conv2", dtype=dtype)
            self.bn2 = None
        else:
            self.conv2 = conv(filters, 3, strides, name="conv2", dtype=dtype)
            self.bn2 = self._bn("bn2")
        self.conv3 = conv(self.out_channels, 1, name="conv3", dtype=dtype)
        self.bn3 = self._bn("bn3", zero_gamma=True)

    def _build_residual(self, in_channels):
        self.conv1.build(nhwc(in_channels))
        self.bn1.build(nhwc(self.filters))
        self.conv2.build(nhwc(self.filters))
        if self.bn2 is not None:
            self.bn2.build(nhwc(self.filters))
        self.conv3.build(nhwc(self.filters))
        self.bn3.build(nhwc(self.out_channels))

    def _residual(self, inputs, training):
        x = tf.nn.relu(self.bn1(self.conv1(inputs), training=training))
        if self.bn2 is None:
            x = self.conv2(x, training=training)
        else:
            x = tf.nn.relu(self.bn2(apply_conv(self.conv2, x), training=training))
        return self.bn3(self.conv3(x), training=training)


class BlockGroup(keras.layers.Layer):
    """`num_blocks` blocks at one resolution; the first has the stride and the projection.

    Blocks are the attributes block1..blockN. [B,H,W,C] -> [B,ceil(H/s),ceil(W/s),F*expansion].
    """

    def __init__(self, block_type, filters, num_blocks, strides, sk_ratio, se_ratio,
                 batch_norm_decay, global_bn, **kwargs):
        super().__init__(**kwargs)
        block_class = BottleneckBlock if block_type == "bottleneck" else ResidualBlock
        self.blocks = []
        for index in range(num_blocks):
            block = block_class(
                filters, strides if index == 0 else 1, index == 0, sk_ratio, se_ratio,
                batch_norm_decay, global_bn, name=f"block{index + 1}", dtype=self.dtype_policy)
            setattr(self, f"block{index + 1}", block)  # the checkpoint key
            self.blocks.append(block)
        self.out_channels = self.blocks[0].out_channels

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
            input_shape = nhwc(block.out_channels)

    def call(self, inputs, training=None):
        for block in self.blocks:
            inputs = block(inputs, training=training)
        return inputs


class Stem(keras.layers.Layer):
    """Layers before block_group1; call returns (initial_conv, initial_max_pool).

    ImageNet: 7x7/2 conv -> BN-ReLU -> 3x3/2 SAME max-pool ([B,H,W,3] -> [B,H/4,W/4,F]).
    ResNet-D (resnet_d): three 3x3 convs (F/2 /2, F/2, F) replace the 7x7 conv.
    CIFAR: 3x3/1 conv -> BN-ReLU and no pooling ([B,H,W,3] -> [B,H,W,F]).
    """

    def __init__(self, filters, cifar_stem, resnet_d, batch_norm_decay, global_bn, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        dtype = self.dtype_policy
        self.deep_conv1 = self.deep_bn1 = self.deep_conv2 = self.deep_bn2 = None
        self.max_pool = None
        if cifar_stem:
            self.conv = conv(filters, 3, name="conv", dtype=dtype)
        else:
            if resnet_d:
                half = max(1, filters // 2)
                self.deep_conv1 = conv(half, 3, 2, name="deep_conv1", dtype=dtype)
                self.deep_bn1 = batch_norm(batch_norm_decay, global_bn, name="deep_bn1",
                                           dtype=dtype)
                self.deep_conv2 = conv(half, 3, name="deep_conv2", dtype=dtype)
                self.deep_bn2 = batch_norm(batch_norm_decay, global_bn, name="deep_bn2",
                                           dtype=dtype)
                self.conv = conv(filters, 3, name="conv", dtype=dtype)
            else:
                self.conv = conv(filters, 7, 2, name="conv", dtype=dtype)
            self.max_pool = keras.layers.MaxPooling2D(3, 2, padding="same", name="max_pool",
                                                      dtype=dtype)
        self.bn = batch_norm(batch_norm_decay, global_bn, name="bn", dtype=dtype)

    def build(self, input_shape):
        if self.deep_conv1 is not None:
            half = self.deep_conv1.filters
            self.deep_conv1.build(input_shape)
            self.deep_bn1.build(nhwc(half))
            self.deep_conv2.build(nhwc(half))
            self.deep_bn2.build(nhwc(half))
            input_shape = nhwc(half)
        self.conv.build(input_shape)
        self.bn.build(nhwc(self.filters))

    def call(self, images, training=None):
        x = images
        if self.deep_conv1 is not None:
            x = tf.nn.relu(self.deep_bn1(apply_conv(self.deep_conv1, x), training=training))
            x = tf.nn.relu(self.deep_bn2(self.deep_conv2(x), training=training))
        initial_conv = apply_conv(self.conv, x)
        x = tf.nn.relu(self.bn(initial_conv, training=training))
        if self.max_pool is not None:
            x = self.max_pool(x)
        return initial_conv, x


@keras.saving.register_keras_serializable(package="tf_simclr")
class ResNet(keras.Model):
    """ResNet v1 encoder: images [B,H,W,3] float -> dict of endpoints (see ENDPOINTS).

    Endpoints for the ImageNet stem at 224 px and width w (F(n) = round(n * w)):
    initial_conv [B,112,112,F(64)], initial_max_pool [B,56,56,F(64)],
    block_group1..4 [B,56,56,F(64)e] .. [B,7,7,F(512)e] with e = 4 for depth >= 50
    and 1 for 18/34, final_avg_pool [B, F(512)e] (2048w for R50+, 512w for R18/34).
    The CIFAR stem keeps the resolution (32 px: initial_* 32x32, block_group4 4x4).

    Args:
        depth: 18, 34 (residual blocks) or 50, 101, 152, 200 (bottlenecks).
        width_multiplier: scales every filter count; fractional values are allowed.
        cifar_stem: 3x3/1 stem without max-pool (the official choice for <= 32 px).
        sk_ratio: > 0 turns on selective kernels and ResNet-D (SimCLRv2 uses 0.0625).
        se_ratio: > 0 adds squeeze-and-excitation with that reduction ratio.
        batch_norm_decay: BatchNorm momentum of the moving statistics.
        global_bn: synchronise BatchNorm statistics across replicas.

    `freeze_through(k)` freezes the stem (k = 0) and block groups 1..k for fine-tuning.
    """

    def __init__(self, depth, width_multiplier=1.0, cifar_stem=False, sk_ratio=0.0,
                 se_ratio=0.0, batch_norm_decay=0.9, global_bn=True, name="resnet", **kwargs):
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth={depth!r} is not supported; expected one of "
                             f"{sorted(DEPTHS)}.")
        if not width_multiplier > 0 or round(64 * width_multiplier) < 1:
            raise ValueError(f"width_multiplier={width_multiplier!r} leaves the stem without "
                             "filters; expected a value with round(64 * width_multiplier) >= 1.")
        for arg, value in (("sk_ratio", sk_ratio), ("se_ratio", se_ratio)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{arg}={value!r} is out of range; expected 0 <= {arg} <= 1.")
        if not 0.0 <= batch_norm_decay < 1.0:
            raise ValueError(f"batch_norm_decay={batch_norm_decay!r} is out of range; "
                             "expected 0 <= batch_norm_decay < 1.")
        super().__init__(name=name, **kwargs)
        self.depth = depth
        self.width_multiplier = width_multiplier
        self.cifar_stem = cifar_stem
        self.sk_ratio = sk_ratio
        self.se_ratio = se_ratio
        self.batch_norm_decay = batch_norm_decay
        self.global_bn = global_bn
        self._frozen_through = -1

        block_type, blocks_per_group = DEPTHS[depth]
        self.stem = Stem(scaled_filters(64, width_multiplier), cifar_stem, sk_ratio > 0,
                         batch_norm_decay, global_bn, name="stem", dtype=self.dtype_policy)
        self.block_groups = []
        for index, (base, num_blocks, strides) in enumerate(
                zip(GROUP_FILTERS, blocks_per_group, GROUP_STRIDES)):
            group = BlockGroup(block_type, scaled_filters(base, width_multiplier), num_blocks,
                               strides, sk_ratio, se_ratio, batch_norm_decay, global_bn,
                               name=f"block_group{index + 1}", dtype=self.dtype_policy)
            setattr(self, f"block_group{index + 1}", group)  # the checkpoint key
            self.block_groups.append(group)
        self.feature_dim = self.block_groups[-1].out_channels

    @property
    def frozen_through(self):
        """-1 if nothing is frozen, else the last frozen stage (0 = stem, 1..4 = groups)."""
        return self._frozen_through

    def freeze_through(self, block):
        """Freezes the stem (block 0) and block groups 1..block; -1 unfreezes everything.

        Frozen stages have no trainable variables, run their BatchNorms on the moving
        statistics (which `training=True` then leaves unchanged), and their output passes
        through a stop_gradient. This is the official `fine_tune_after_block`; 4 freezes
        the whole encoder (linear evaluation). Works before or after the model is built.
        """
        if block not in range(-1, NUM_STAGES):
            raise ValueError(f"freeze_through(block={block!r}): expected -1 (nothing frozen), "
                             "0 (the stem) or 1..4 (block groups).")
        self._frozen_through = block
        self._apply_freezing()

    def _apply_freezing(self):
        # Keras marks only variables that exist when `trainable` is set, so build() calls
        # this again once every variable has been created.
        for index, stage in enumerate(self._stages()):
            stage.trainable = index > self._frozen_through

    def _stages(self):
        return [self.stem] + self.block_groups

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"ResNet expects images [batch, height, width, channels]; "
                             f"received input_shape={input_shape}.")
        self.stem.build(input_shape)
        channels = self.stem.filters
        for group in self.block_groups:
            group.build(nhwc(channels))
            channels = group.out_channels
        self._apply_freezing()

    def call(self, images, training=None):
        endpoints = {}
        x = images
        for index, stage in enumerate(self._stages()):
            frozen = index <= self._frozen_through
            stage_training = False if frozen else training
            if index == 0:
                endpoints["initial_conv"], x = stage(x, training=stage_training)
                key = "initial_max_pool"
            else:
                x = stage(x, training=stage_training)
                key = f"block_group{index}"
            if index == self._frozen_through:
                x = tf.stop_gradient(x)
            endpoints[key] = x
        endpoints["final_avg_pool"] = tf.reduce_mean(x, axis=[1, 2])
        return endpoints

    def get_config(self):
        config = super().get_config()
        config.update(depth=self.depth, width_multiplier=self.width_multiplier,
                      cifar_stem=self.cifar_stem, sk_ratio=self.sk_ratio,
                      se_ratio=self.se_ratio, batch_norm_decay=self.batch_norm_decay,
                      global_bn=self.global_bn)
        return config
