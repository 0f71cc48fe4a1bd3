"""kNN top-1 of the representation during pretraining (labelled data only).

Every `knn_monitor_epochs` epochs, and after the last step unless the loop before
it just measured, the encoder (inference
mode, eval preprocessing) embeds the first `knn_monitor_train_examples` of the train
split as the bank and the first `knn_monitor_eval_examples` of the eval split as
queries; weighted kNN (k=200, T=0.1, cosine) classifies the queries. It tracks
whether the features improve while the contrastive loss falls; the probe
(`tf_simclr.probe`) is the full evaluation.
"""

from absl import logging

from tf_simclr import config as config_lib
from tf_simclr.probe import extract, knn

FEATURES = "final_avg_pool"


class KnnMonitor:
    """`due(step)` says when to measure; `measure()` -> {"knn_top1", "knn_top5"}."""

    def __init__(self, state, source):
        self._config = config = state.config
        self._source = source
        info = source.info
        epochs = config.probe.knn_monitor_epochs
        self.enabled = bool(epochs and config.train.train_mode == "pretrain"
                            and info.num_classes and info.num_eval_examples)
        if epochs and not self.enabled:
            logging.info("kNN monitor off: it needs pretraining on labelled data with a "
                         "non-empty eval split")
        self._every = epochs * config_lib.epoch_steps(config, info.num_train_examples)
        self._extractor = None
        self._state = state
        self._measured_at = None

    def due(self, step, previous_step, last_step):
        """True when the loop from `previous_step` to `step` crossed a multiple of the
        interval, or ended training and the loop before it measured nothing."""
        if not self.enabled:
            return False
        if step // self._every > previous_step // self._every:
            return True
        return step == last_step and self._measured_at != previous_step

    def measure(self):
        config, source, info = self._config, self._source, self._source.info
        self._measured_at = self._state.step
        if self._extractor is None:
            model = self._state.model
            self._extractor = extract.Extractor(
                lambda images: model(images, training=False)[FEATURES], self._state.strategy)
        bank, bank_labels = self._extractor.arrays(
            source, config, config.data.train_split, info.num_train_examples,
            config.probe.knn_monitor_train_examples)
        queries, query_labels = self._extractor.arrays(
            source, config, config.data.eval_split, info.num_eval_examples,
            config.probe.knn_monitor_eval_examples)
        result = knn.evaluate(bank, bank_labels, queries, query_labels, info.num_classes,
                              (knn.REFERENCE,))
        return {"knn_top1": result["knn_top1"], "knn_top5": result["knn_top5"]}
