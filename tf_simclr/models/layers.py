"""The layers ResNet is built from: BatchNorm, convolutions with the official padding,
squeeze-and-excitation and selective-kernel convolutions.

All tensors are NHWC. `conv(...)` makes a bias-free convolution; a strided one runs
through `apply_conv`, which applies the official "fixed padding" (pad (k-1) split
begin/end, then VALID). Strided 1x1 convolutions are `SubsampledPointwiseConv2D`.
"""

import keras
import tensorflow as tf

BATCH_NORM_EPSILON = 1e-5
SK_MIN_DIM = 32


class BatchNorm(keras.layers.BatchNormalization):
    """keras BatchNormalization over the last axis, run as TensorFlow's fused kernel.

    [B,H,W,C] or [B,C] -> same. The same variables, outputs, gradients and moving
    statistics (the biased batch variance, as keras) as the parent. Why: keras
    composes BatchNorm from a dozen element-wise ops and reductions per layer, each
    one pass over the activations, forward and backward; on narrow networks those
    passes cost more than the convolutions (the quickstart net spends ~45% of its
    step there; bench/README.md). One FusedBatchNormV3 (oneDNN on CPU, cuDNN on GPU)
    and its gradient do it in one pass each. Synchronized (cross-replica) BatchNorm
    keeps the parent's path: the fused kernel only sees its own replica's batch, and so
    do float64 inputs (the kernel has no float64; tests use it as exact maths).
    """

    def call(self, inputs, training=None, mask=None):
        if self.synchronized or mask is not None or inputs.dtype == tf.float64:
            return super().call(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        # The kernel takes NHWC; [B,C] is [B,1,1,C]. float16/bfloat16 inputs are
        # normalised in float32, as the parent does.
        x = tf.cast(tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
                    if inputs.shape.rank == 2 else inputs, tf.float32)
        scale = tf.cast(self.gamma, tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros_like(scale)
        if training and self.trainable:
            outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=tf.constant([], tf.float32),
                variance=tf.constant([], tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=True)
            # The kernel returns the unbiased variance n/(n-1) * biased one.
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
            variance = variance * (count - 1.0) / count
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum
                              + tf.cast(batch, moving.dtype) * (1.0 - self.momentum))
        else:
            outputs, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.cast(tf.reshape(outputs, shape), inputs.dtype)


def batch_norm(momentum, synchronized, zero_gamma=False, center=True, name=None, dtype=None):
    """The BatchNorm of every SimCLR layer: epsilon 1e-5, learned gamma, optional beta."""
    return BatchNorm(
        axis=-1, momentum=momentum, epsilon=BATCH_NORM_EPSILON, center=center, scale=True,
        gamma_initializer="zeros" if zero_gamma else "ones", synchronized=synchronized,
        name=name, dtype=dtype)


class SubsampledPointwiseConv2D(keras.layers.Conv2D):
    """A 1x1 convolution with stride s run as subsampling then a stride-1 1x1 conv.

    [B,H,W,C] -> [B,ceil(H/s),ceil(W/s),F], the same outputs, gradients and variables as
    `Conv2D(F, 1, strides=s, padding="valid")`. Why: TensorFlow 2.21's oneDNN backward
    of a strided 1x1 convolution (`brgconv_strided` on AVX-512 CPUs) corrupts the heap for
    small channel counts (bench/sweep_onednn_conv.py has the extent); the stride-1 kernel
    is not affected. The subsampling x[:, ::s, ::s, :] is a 1x1 average pool with stride
    s: exact (a mean of one value), and its gradient is a pooling kernel rather than the
    slower strided-slice gradient (bench/README.md).
    """

    def convolution_op(self, inputs, kernel):
        subsampled = keras.ops.average_pool(inputs, pool_size=1, strides=self.strides,
                                            padding="valid", data_format=self.data_format)
        return keras.ops.conv(subsampled, kernel, strides=1, padding="valid",
                              data_format=self.data_format)


def conv(filters, kernel_size, strides=1, name=None, dtype=None):
    """A bias-free conv; a strided one must be run through `apply_conv` (fixed padding)."""
    conv_class = keras.layers.Conv2D
    if kernel_size == 1 and strides > 1:
        conv_class = SubsampledPointwiseConv2D
    return conv_class(
        filters, kernel_size, strides=strides, padding="same" if strides == 1 else "valid",
        use_bias=False, kernel_initializer=keras.initializers.VarianceScaling(),
        name=name, dtype=dtype)


def fixed_pad(images, kernel_size):
    """Pads H and W by (k-1)//2 before and the rest after, independent of the input size."""
    total = kernel_size - 1
    begin = total // 2
    return tf.pad(images, [[0, 0], [begin, total - begin], [begin, total - begin], [0, 0]])


def apply_conv(conv, images):
    """Runs `conv` [B,H,W,C] -> [B,ceil(H/s),ceil(W/s),F] with the official fixed padding."""
    if conv.strides[0] > 1:
        images = fixed_pad(images, conv.kernel_size[0])
    return conv(images)


def nhwc(channels):
    """The build shape of a layer that only needs its input channel count."""
    return (None, None, None, channels)


class SqueezeExcitation(keras.layers.Layer):
    """Channel gate: x * sigmoid(expand(relu(reduce(mean_hw(x))))), [B,H,W,C] -> same."""

    def __init__(self, reduced_filters, channels, **kwargs):
        super().__init__(**kwargs)
        conv_kwargs = dict(kernel_size=1, padding="same", use_bias=True, dtype=self.dtype_policy,
                           kernel_initializer=keras.initializers.VarianceScaling())
        self.reduce = keras.layers.Conv2D(reduced_filters, name="reduce", **conv_kwargs)
        self.expand = keras.layers.Conv2D(channels, name="expand", **conv_kwargs)

    def build(self, input_shape):
        self.reduce.build(input_shape)
        self.expand.build(nhwc(self.reduce.filters))

    def call(self, inputs):
        squeezed = tf.reduce_mean(inputs, axis=[1, 2], keepdims=True)
        gate = tf.sigmoid(self.expand(tf.nn.relu(self.reduce(squeezed))))
        return inputs * gate


class SelectiveKernelConv2D(keras.layers.Layer):
    """Two 3x3 streams mixed by a softmax attention, [B,H,W,C] -> [B,ceil(H/s),ceil(W/s),F].

    One 3x3 conv with 2F outputs (and the stride) + BN-ReLU is split into two streams;
    their sum is pooled, reduced to max(int(F * sk_ratio), 32) channels (1x1 conv,
    BN-ReLU), expanded to 2F and turned into per-channel softmax weights over the streams.
    """

    def __init__(self, filters, strides, sk_ratio, batch_norm_decay, global_bn, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.mid_filters = max(int(filters * sk_ratio), SK_MIN_DIM)
        dtype = self.dtype_policy
        self.conv = conv(2 * filters, 3, strides, name="conv", dtype=dtype)
        self.bn = batch_norm(batch_norm_decay, global_bn, name="bn", dtype=dtype)
        self.mix_reduce = conv(self.mid_filters, 1, name="mix_reduce", dtype=dtype)
        self.mix_bn = batch_norm(batch_norm_decay, global_bn, name="mix_bn", dtype=dtype)
        self.mix_expand = conv(2 * filters, 1, name="mix_expand", dtype=dtype)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(nhwc(2 * self.filters))
        self.mix_reduce.build(nhwc(self.filters))
        self.mix_bn.build(nhwc(self.mid_filters))
        self.mix_expand.build(nhwc(self.mid_filters))

    def call(self, inputs, training=None):
        streams = tf.nn.relu(self.bn(apply_conv(self.conv, inputs), training=training))
        streams = tf.stack(tf.split(streams, 2, axis=-1))  # [2,B,H,W,F]
        pooled = tf.reduce_mean(tf.reduce_sum(streams, axis=0), axis=[1, 2], keepdims=True)
        mixing = tf.nn.relu(self.mix_bn(self.mix_reduce(pooled), training=training))
        mixing = tf.stack(tf.split(self.mix_expand(mixing), 2, axis=-1))  # [2,B,1,1,F]
        return tf.reduce_sum(streams * tf.nn.softmax(mixing, axis=0), axis=0)
