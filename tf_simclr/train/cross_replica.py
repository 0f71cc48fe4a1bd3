"""Cross-replica helpers: replica count and id, and a differentiable all-gather.

The NT-Xent loss needs the embeddings of every replica as negatives. These helpers
work in three situations and agree with each other:

* no strategy (the default replica context): one replica, id 0, concat = identity;
* the replica context of a strategy (inside `strategy.run`): R replicas;
* the cross-replica context (inside `strategy.scope()` but outside `strategy.run`):
  treated as one replica holding the whole batch, because there is no per-replica
  tensor to gather there.
"""

import tensorflow as tf


def _replica_context():
    """The current replica context, or None in a strategy's cross-replica context."""
    return tf.distribute.get_replica_context()


def num_replicas_in_sync():
    """R: how many replicas run this step together (a Python int, 1 outside a strategy).

    The training loop divides each replica's loss by this before taking gradients
    (see `tf_simclr.train.losses.nt_xent_loss`).
    """
    ctx = _replica_context()
    if ctx is None:
        return 1
    return ctx.num_replicas_in_sync


def replica_id_in_sync_group():
    """This replica's index in [0, R) as an int32 scalar tensor (0 outside a strategy)."""
    ctx = _replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tf.constant(0, tf.int32)
    # TPU replica ids are uint32; cast so they can offset int32 label indices.
    return tf.cast(tf.convert_to_tensor(ctx.replica_id_in_sync_group), tf.int32)


def cross_replica_concat(tensors):
    """Concatenates each replica's tensors along axis 0, in replica order, with gradient.

    Args:
        tensors: one tensor or a list of tensors, each [B_local, ...]; every replica
            must pass the same structure, dtypes and shapes (equal B_local: the
            training input uses drop_remainder; a mismatch fails in EnsureShape).

    Returns:
        The same structure with each tensor [R * B_local, ...]: rows
        [r * B_local, (r + 1) * B_local) come from replica r. With one replica (or
        outside a strategy) the input is returned unchanged.

    Gradient: `ReplicaContext.all_gather`, whose backward all-reduces (SUM) the
    incoming gradient of the gathered tensor over all replicas and hands each
    replica the rows it contributed. Replica r's input therefore receives the
    gradient of the sum of all replicas' losses, which is what makes the
    distributed NT-Xent gradient equal to the single-device one (checked in
    tests/test_distributed_loss.py). We use it instead of the official
    scatter_nd + all_reduce(SUM) trick: the gradient is the same, but the forward
    pass moves R * B_local rows per tensor instead of all-reducing an [R, B_local,
    ...] tensor that is mostly zeros.
    """
    ctx = _replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensors
    num_replicas = ctx.num_replicas_in_sync
    flat = tf.nest.flatten(tensors)
    gathered = tf.nest.flatten(ctx.all_gather(tensors, axis=0))
    # all_gather loses the static shape; restore it (and check equal local batches).
    gathered = [
        tf.ensure_shape(g, [None if t.shape[0] is None else num_replicas * t.shape[0]]
                        + t.shape[1:].as_list())
        for t, g in zip(flat, gathered)]
    return tf.nest.pack_sequence_as(tensors, gathered)
