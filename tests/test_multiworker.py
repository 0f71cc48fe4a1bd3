"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train in lockstep.

Each worker runs the real TrainState/Trainer on its shard of an in-memory source
(one CPU replica per worker, global batch 8), then writes its weights; the two
workers must hold identical weights, both at the last step, and only the chief
keeps checkpoints in model_dir.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import json, os, sys
import numpy as np
sys.path.insert(0, os.path.join({repo!r}, "tests"))
from testutil import random_source, tiny_config
from tf_simclr import config as config_lib
from tf_simclr.train import strategy as strategy_lib, trainer
import keras
keras.utils.set_random_seed(3)
config = tiny_config({model_dir!r}, train_steps=3, checkpoint_steps=3, global_bn=True)
strategy = strategy_lib.make_strategy(config.hardware)
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
source = random_source(num_train=48)
state = trainer.TrainState(config, strategy, source.info.num_classes,
                           source.info.num_train_examples)
loop = trainer.Trainer(state, source)
loop.run()
np.savez({out!r}, step=state.step, losses=[m["total_loss"] for _, m in loop.history],
         **{{v.path.replace("/", "|"): v.numpy() for v in state.model.variables}})
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_train_with_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    model_dir = str(tmp_path / "run")
    processes = []
    for task in range(2):
        script = tmp_path / f"worker{task}.py"
        script.write_text(WORKER.format(repo=REPO, model_dir=model_dir,
                                        out=str(tmp_path / f"weights{task}.npz")))
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": task}}))
        log = open(tmp_path / f"worker{task}.log", "w")
        processes.append((subprocess.Popen([sys.executable, str(script)], env=env, cwd=REPO,
                                           stdout=log, stderr=subprocess.STDOUT), log))
    for task, (process, log) in enumerate(processes):
        code = process.wait(timeout=600)
        log.close()
        assert code == 0, (tmp_path / f"worker{task}.log").read_text()[-3000:]
    chief, worker = (np.load(tmp_path / f"weights{task}.npz") for task in range(2))
    assert int(chief["step"]) == int(worker["step"]) == 3
    assert sorted(chief.files) == sorted(worker.files)
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], worker[name], err_msg=name)
    assert np.all(np.isfinite(chief["losses"])) and len(chief["losses"]) == 3
    entries = sorted(os.listdir(model_dir))
    assert "ckpt-3.index" in entries
    assert not [e for e in entries if e.startswith(".worker_")]  # the worker's copy is gone
