"""model_dir/learning_curve.json and .png: contrastive loss and kNN top-1 by epoch.

The JSON keeps every point of the run across restarts. It is written just before
each checkpoint (`save`), so a resumed run finds every point up to its step and
drops the later ones; not once per loop, which over a long run would rewrite a growing file
thousands of times. The PNG draws it at the end of training: the loss per logged
loop on the left axis, the kNN monitor's top-1 on the right.
"""

import json
import os

from tf_simclr import config as config_lib

JSON_FILENAME = "learning_curve.json"
PNG_FILENAME = "learning_curve.png"


class LearningCurve:
    """Points {"step", "epoch", name: value} recorded by the trainer."""

    def __init__(self, model_dir, start_step, enabled=True):
        self._path = os.path.join(model_dir, JSON_FILENAME)
        self._enabled = enabled
        self.points = []
        if enabled and os.path.exists(self._path):
            with open(self._path, encoding="utf-8") as f:
                self.points = [p for p in json.load(f) if p["step"] <= start_step]

    def record(self, step, epoch, values):
        if self._enabled:
            self.points.append({"step": step, "epoch": epoch, **values})

    def save(self):
        """Writes the points so far (call it when a checkpoint is saved)."""
        if self._enabled:
            config_lib.write_atomically(self._path, json.dumps(self.points))

    def series(self, name):
        """([epoch], [value]) of the points that hold `name`."""
        points = [p for p in self.points if name in p]
        return [p["epoch"] for p in points], [p[name] for p in points]

    def write_png(self, loss_name="contrast_loss", accuracy_name="knn_top1"):
        """Draws the curve next to the JSON; returns the PNG path (None if nothing)."""
        epochs, loss = self.series(loss_name)
        if not self._enabled or not epochs:
            return None
        import matplotlib
        matplotlib.use("Agg")  # no display; before pyplot is imported
        from matplotlib import pyplot

        figure, loss_axis = pyplot.subplots(figsize=(7, 4), dpi=100)
        loss_axis.plot(epochs, loss, color="tab:blue", label=loss_name)
        loss_axis.set_xlabel("epoch")
        loss_axis.set_ylabel(loss_name, color="tab:blue")
        knn_epochs, top1 = self.series(accuracy_name)
        if knn_epochs:
            accuracy_axis = loss_axis.twinx()
            accuracy_axis.plot(knn_epochs, [100 * v for v in top1], "o-", color="tab:red",
                               label=accuracy_name)
            accuracy_axis.set_ylabel("kNN top-1 (%, k=200, subset)", color="tab:red")
        loss_axis.set_title("pretraining: contrastive loss and kNN top-1")
        figure.tight_layout()
        path = self._path[:-len(".json")] + ".png"
        figure.savefig(path, format="png")
        pyplot.close(figure)
        return path
