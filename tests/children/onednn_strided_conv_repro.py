"""Child process: TensorFlow's own five-line reproduction of the oneDNN strided 1x1 bug.

    python onednn_strided_conv_repro.py

d/dx and d/dw of sum(conv2d(x, w, strides=2)^2) for x [5,32,32,8], w [1,1,8,16]. On
AVX-512 CPUs with oneDNN on, TensorFlow 2.21 corrupts the heap here (the process dies
with SIGABRT or SIGSEGV); elsewhere it prints "ok". tf_simclr's layers never run this
kernel (layers.SubsampledPointwiseConv2D); the test suite runs this only to report
whether the platform has the bug.
"""

import tensorflow as tf

x = tf.random.stateless_normal([5, 32, 32, 8], seed=[0, 1])
w = tf.random.stateless_normal([1, 1, 8, 16], seed=[0, 2])
with tf.GradientTape() as tape:
    tape.watch([x, w])
    loss = tf.reduce_sum(tf.square(tf.nn.conv2d(x, w, strides=2, padding="VALID")))
tape.gradient(loss, [x, w])
print("ok")
