"""learning_curve.json across a restart (tf_simclr.train.learning_curve)."""

import json

from tf_simclr.train import learning_curve


def test_points_are_written_with_checkpoints_and_a_resume_drops_later_ones(tmp_path):
    curve = learning_curve.LearningCurve(str(tmp_path), start_step=0)
    curve.record(10, 0.5, {"contrast_loss": 9.0})
    assert not (tmp_path / learning_curve.JSON_FILENAME).exists()  # no write per loop
    curve.record(20, 1.0, {"contrast_loss": 8.0, "knn_top1": 0.7})
    curve.save()
    curve.record(30, 1.5, {"contrast_loss": 7.5})
    curve.save()  # written ahead of a checkpoint that never came
    written = json.loads((tmp_path / learning_curve.JSON_FILENAME).read_text())
    assert [p["step"] for p in written] == [10, 20, 30]
    resumed = learning_curve.LearningCurve(str(tmp_path), start_step=20)
    assert resumed.series("contrast_loss") == ([0.5, 1.0], [9.0, 8.0])
    assert resumed.series("knn_top1") == ([1.0], [0.7])
    assert learning_curve.LearningCurve(str(tmp_path), 20, enabled=False).points == []
