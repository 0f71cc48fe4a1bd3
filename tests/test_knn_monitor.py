"""When the kNN monitor measures during pretraining (tf_simclr.train.knn_monitor)."""

import types

from tf_simclr.config import Config
from tf_simclr.train import knn_monitor


def _monitor(epochs, num_train=1000, batch=100, num_classes=10, train_mode="pretrain"):
    config = Config().replace(knn_monitor_epochs=epochs, train_batch_size=batch,
                              train_mode=train_mode, model_dir="/tmp/unused")
    info = types.SimpleNamespace(num_classes=num_classes, num_train_examples=num_train,
                                 num_eval_examples=50)
    state = types.SimpleNamespace(config=config, step=0)
    return knn_monitor.KnnMonitor(state, types.SimpleNamespace(info=info)), state


def _due_steps(monitor, state, loop_ends, last):
    measured, previous = [], 0
    for step in loop_ends:
        if monitor.due(step, previous, last):
            state.step = step
            monitor._measured_at = step  # what measure() records, without a model
            measured.append(step)
        previous = step
    return measured


def test_measures_when_an_interval_ends_and_at_the_end():
    monitor, state = _monitor(epochs=2)  # 10 steps per epoch: every 20 steps
    assert _due_steps(monitor, state, [7, 14, 21, 28, 35, 42, 45], 45) == [21, 42]
    assert _due_steps(*_monitor(epochs=2), [7, 14, 21, 28, 35, 42, 45, 49], 49) == [21, 42, 49]


def test_the_last_step_is_not_measured_twice():
    monitor, state = _monitor(epochs=1)
    assert _due_steps(monitor, state, [5, 10, 11], 11) == [10]


def test_off_without_labels_or_outside_pretraining():
    assert not _monitor(epochs=1, num_classes=0)[0].enabled
    assert not _monitor(epochs=0)[0].enabled
    assert not _monitor(epochs=1, train_mode="finetune")[0].enabled
