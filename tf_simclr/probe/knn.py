"""Weighted k-nearest-neighbour classification on cosine similarity.

The protocol of InstDisc / lightly (k=200, T=0.1) and solo-learn (k=20): features
are L2-normalised, each query's k most similar bank examples vote for their class
with weight exp(similarity / T), and the classes are ranked by their summed votes.
The bank is scanned in chunks with a running top-k, so it never has to fit in
memory as one similarity matrix (ImageNet: 50k x 1.28M). Equal similarities keep
the bank's order (the lower index first), as a stable argsort would.
"""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class KnnSetting:
    """One kNN classifier: `k` neighbours, vote temperature `temperature`."""
    k: int
    temperature: float

    @property
    def name(self):
        """'knn' for the reference setting k=200, else e.g. 'knn20'."""
        return "knn" if self == REFERENCE else f"knn{self.k}"


REFERENCE = KnnSetting(200, 0.1)
SETTINGS = (REFERENCE, KnnSetting(20, 0.1))


def _normalize(x):
    return tf.math.l2_normalize(x, axis=1)


@tf.function(reduce_retracing=True)
def _merge_top_k(best_sim, best_index, queries, bank_chunk, chunk_start, k):
    """Merges one bank chunk into the running top-k of each query."""
    similarity = tf.matmul(queries, bank_chunk, transpose_b=True)
    indices = chunk_start + tf.range(tf.shape(bank_chunk)[0], dtype=tf.int64)
    all_sim = tf.concat([best_sim, similarity], 1)
    all_index = tf.concat(
        [best_index, tf.broadcast_to(indices[None], tf.shape(similarity, tf.int64))], 1)
    top = tf.math.top_k(all_sim, k=tf.minimum(k, tf.shape(all_sim)[1]), sorted=True)
    return top.values, tf.gather(all_index, top.indices, batch_dims=1)


def nearest_neighbours(bank, queries, k, bank_chunk_rows=65536, query_chunk_rows=1024):
    """The k most cosine-similar bank rows of each query.

    Args:
      bank: float [N, D] array or a callable `chunks()` yielding (start, float [n, D])
        chunks in order (for banks on disk).
      queries: float [Q, D].
      k: neighbours per query (at most N).

    Returns:
      (similarity float [Q, k] descending, index int64 [Q, k]) as NumPy arrays.
    """
    chunks = bank if callable(bank) else _array_chunks(bank, bank_chunk_rows)
    queries = np.asarray(queries)
    sims, indices = [], []
    for q_start in range(0, len(queries), query_chunk_rows):
        q = _normalize(tf.constant(queries[q_start:q_start + query_chunk_rows]))
        best_sim = tf.zeros([q.shape[0], 0], q.dtype)
        best_index = tf.zeros([q.shape[0], 0], tf.int64)
        for start, chunk in chunks():
            chunk = _normalize(tf.constant(chunk, q.dtype))
            best_sim, best_index = _merge_top_k(best_sim, best_index, q, chunk,
                                                tf.constant(start, tf.int64), tf.constant(k))
        sims.append(best_sim.numpy())
        indices.append(best_index.numpy())
    return np.concatenate(sims), np.concatenate(indices)


def _array_chunks(bank, rows):
    bank = np.asarray(bank)

    def chunks():
        for start in range(0, len(bank), rows):
            yield start, bank[start:start + rows]
    return chunks


def class_votes(similarity, neighbour_labels, num_classes, temperature):
    """float [Q, C]: per class, the summed exp(similarity / T) of its neighbours."""
    weights = np.exp(similarity.astype(np.float64) / temperature)
    votes = np.zeros([len(similarity), num_classes])
    np.add.at(votes, (np.arange(len(similarity))[:, None], neighbour_labels), weights)
    return votes


def top_k_accuracy(scores, labels, k):
    """Fraction of rows whose label is among the k highest scores (ties: lower class)."""
    k = min(k, scores.shape[1])
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(ranked == np.asarray(labels)[:, None], axis=1)))


def evaluate(bank, bank_labels, queries, query_labels, num_classes, settings=SETTINGS):
    """{setting.name + '_top1' / '_top5': accuracy} for every kNN setting.

    One neighbour search at the largest k serves every setting (the k nearest are
    a prefix of the K nearest).
    """
    bank_labels = np.asarray(bank_labels)
    largest = max(s.k for s in settings)
    similarity, index = nearest_neighbours(bank, queries, largest)
    labels = bank_labels[index]
    result = {}
    for setting in settings:
        votes = class_votes(similarity[:, :setting.k], labels[:, :setting.k], num_classes,
                            setting.temperature)
        result[f"{setting.name}_top1"] = top_k_accuracy(votes, query_labels, 1)
        result[f"{setting.name}_top5"] = top_k_accuracy(votes, query_labels, 5)
    return result
