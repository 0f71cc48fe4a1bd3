"""NT-Xent, the SimCLR contrastive loss, the supervised cross-entropy and distillation.

Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", eq. (1), with the semantics of google-research/simclr
`tf2/objective.py`: negatives from the global batch, self-similarity removed by
subtracting LARGE_NUM, both directions summed.

Loss scaling contract with the training loop (as official `tf2/run.py`):
every replica computes its local mean (these functions); the loop divides it by
`tf_simclr.train.cross_replica.num_replicas_in_sync()` before `tape.gradient`, and
`optimizer.apply_gradients` all-reduces the gradients by SUM. The applied gradient
is then the gradient of the mean loss over the global batch, i.e. what one device
computes on the whole batch (tests/test_distributed_loss.py).
"""

import numbers

import tensorflow as tf

from tf_simclr.train import cross_replica

# Subtracted from the self-similarity logits, as official: exp(-1e9 / ...) is 0.
LARGE_NUM = 1e9


def nt_xent_loss(z1, z2, temperature, normalize=True):
    """NT-Xent over the global batch; returns (loss, logits_ab, labels).

    Args:
        z1: [B_local, d] projections of view 1 on this replica (any float dtype).
        z2: [B_local, d] projections of view 2; row i of z1 and of z2 are the two
            views of the same image.
        temperature: tau > 0; logits are similarities / tau.
        normalize: L2-normalise z1 and z2 first, so similarities are cosines
            (flag --hidden_norm).

    Returns:
        loss: float32 scalar, the mean over the local batch of loss_a + loss_b,
            where loss_a is the softmax cross-entropy of view-1 anchors against
            [z2_all | z1_all] and loss_b that of view-2 anchors against
            [z1_all | z2_all]. It is the official SUM of the two directions, so at
            initialisation (all logits equal) it is 2 * ln(2N - 1), N the global
            batch, not the per-anchor average ln(2N - 1).
        logits: float32 [B_local, N], the cross-view logits z1 . z2_all^T / tau
            (official logits_ab), for `tf_simclr.train.metrics`.
        labels: float32 [B_local, 2N] one-hot; local row i's positive is global
            column replica_id * B_local + i.

    Inside `strategy.run` with R > 1 replicas, z1 and z2 of all replicas are
    gathered (with gradient, `cross_replica.cross_replica_concat`) as negatives and
    N = R * B_local; every replica must have the same B_local. Outside a strategy,
    with one replica, or in the cross-replica context, N = B_local. The
    computation is float32 even for float16/bfloat16 inputs (mixed precision).
    See the module docstring for how the loop scales the loss.
    """
    if isinstance(temperature, numbers.Number) and not temperature > 0:
        raise ValueError(f"temperature={temperature!r} is not supported; expected a "
                         "value > 0.")
    z1 = tf.convert_to_tensor(z1)
    z2 = tf.convert_to_tensor(z2)
    if z1.shape.rank != 2 or not z1.shape.is_compatible_with(z2.shape):
        raise ValueError(f"z1 has shape {z1.shape} and z2 {z2.shape}; expected two "
                         "[B_local, d] tensors of the same shape.")
    if not (z1.dtype.is_floating and z2.dtype.is_floating):
        raise ValueError(f"z1 has dtype {z1.dtype.name} and z2 {z2.dtype.name}; "
                         "expected floating-point projections.")
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=-1)
        z2 = tf.math.l2_normalize(z2, axis=-1)

    batch = tf.shape(z1)[0]
    global_batch = cross_replica.num_replicas_in_sync() * batch
    z1_all, z2_all = cross_replica.cross_replica_concat([z1, z2])
    positives = tf.range(batch) + cross_replica.replica_id_in_sync_group() * batch
    labels = tf.one_hot(positives, 2 * global_batch)
    self_mask = tf.one_hot(positives, global_batch)

    inv_temperature = 1.0 / tf.cast(temperature, tf.float32)
    logits_aa = tf.matmul(z1, z1_all, transpose_b=True) * inv_temperature
    logits_aa -= self_mask * LARGE_NUM
    logits_bb = tf.matmul(z2, z2_all, transpose_b=True) * inv_temperature
    logits_bb -= self_mask * LARGE_NUM
    logits_ab = tf.matmul(z1, z2_all, transpose_b=True) * inv_temperature
    logits_ba = tf.matmul(z2, z1_all, transpose_b=True) * inv_temperature

    loss_a = tf.nn.softmax_cross_entropy_with_logits(
        labels, tf.concat([logits_ab, logits_aa], axis=1))
    loss_b = tf.nn.softmax_cross_entropy_with_logits(
        labels, tf.concat([logits_ba, logits_bb], axis=1))
    return tf.reduce_mean(loss_a + loss_b), logits_ab, labels


def labelled_weights(labels):
    """[B] float32: 1 where the label is a class id (>= 0), 0 for UNLABELED (-1)."""
    return tf.cast(labels >= 0, tf.float32)


def supervised_loss(labels, logits, weights=None):
    """Softmax cross-entropy from logits, averaged over the local batch (float32).

    Args:
        labels: [B] integer class ids, or [B, C] one-hot (or soft) labels.
        logits: [B, C] unnormalised class scores (any float dtype).
        weights: optional [B] per-example weights, e.g. the 0/1 mask of a padded
            eval batch or of unlabelled examples. With weights the result is
            sum(w * ce) / count(w != 0), and 0 if every weight is 0 (as official
            TF1 `losses.softmax_cross_entropy`). Class ids of zero-weight rows are
            never read, so they may be placeholders such as -1.

    Returns:
        A float32 scalar. The loop scales it like the contrastive loss.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.convert_to_tensor(labels)
    sparse = labels.dtype.is_integer
    if logits.shape.rank != 2 or not (
            labels.shape.is_compatible_with(logits.shape[:1]) if sparse
            else labels.shape.is_compatible_with(logits.shape)):
        raise ValueError(f"labels have shape {labels.shape} and logits {logits.shape}; "
                         "expected logits [B, num_classes] with labels [B] (class ids) "
                         "or [B, num_classes] (one-hot).")
    if weights is not None:
        weights = tf.cast(weights, tf.float32)
        if not weights.shape.is_compatible_with(logits.shape[:1]):
            raise ValueError(f"weights have shape {weights.shape}; expected [B] with "
                             f"B matching logits {logits.shape}.")
    if sparse:
        if weights is not None:
            labels = tf.where(weights != 0.0, labels, tf.zeros_like(labels))
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    else:
        per_example = tf.nn.softmax_cross_entropy_with_logits(
            tf.cast(labels, tf.float32), logits)
    if weights is None:
        return tf.reduce_mean(per_example)
    num_nonzero = tf.reduce_sum(tf.cast(tf.not_equal(weights, 0.0), tf.float32))
    return tf.math.divide_no_nan(tf.reduce_sum(weights * per_example), num_nonzero)


def distillation_loss(teacher_logits, student_logits, temperature):
    """SimCLRv2's distillation loss, averaged over the local batch (float32).

    -sum_y P_T(y|x) log P_S(y|x) with P = softmax(logits / temperature), the
    teacher's distribution a constant (no gradient reaches the teacher).

    Args:
        teacher_logits: [B, C] the teacher's class scores on the student's view.
        student_logits: [B, C] the student's.
        temperature: T > 0.

    Returns:
        A float32 scalar.
    """
    teacher_logits = tf.cast(teacher_logits, tf.float32)
    student_logits = tf.cast(student_logits, tf.float32)
    if teacher_logits.shape.rank != 2 or not teacher_logits.shape.is_compatible_with(
            student_logits.shape):
        raise ValueError(f"teacher logits have shape {teacher_logits.shape} and student "
                         f"logits {student_logits.shape}; expected the same [B, C].")
    targets = tf.stop_gradient(tf.nn.softmax(teacher_logits / temperature))
    return supervised_loss(targets, student_logits / temperature)


def distillation_objective(teacher_logits, student_logits, labels, temperature,
                           supervised_weight, supervised_scale=1.0):
    """SimCLRv2's distillation loss plus, optionally, the supervised loss on labels.

    loss = distillation_loss(T) + supervised_weight * supervised_loss, where the
    supervised term is the cross-entropy of the student's logits (temperature 1)
    averaged over the examples that have a label (label >= 0; 0 when none has),
    times supervised_scale.

    Args:
        teacher_logits, student_logits: [B, C].
        labels: [B] int class ids, UNLABELED (-1) for images without a label.
        temperature: T > 0 of the distillation term.
        supervised_weight: >= 0; 0 leaves the labels unread.
        supervised_scale: this batch's labelled count over the replicas' mean count,
            so that the mean over replicas is the global batch's mean when replicas
            hold different counts (1 on one device).

    Returns:
        {"loss", "distill_loss"} float32 scalars, and "supervised_loss" when
        supervised_weight > 0.
    """
    terms = {"distill_loss": distillation_loss(teacher_logits, student_logits, temperature)}
    terms["loss"] = terms["distill_loss"]
    if supervised_weight:
        terms["supervised_loss"] = supervised_scale * supervised_loss(
            labels, student_logits, weights=labelled_weights(labels))
        terms["loss"] = terms["loss"] + supervised_weight * terms["supervised_loss"]
    return terms
