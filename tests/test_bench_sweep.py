"""bench/sweep_recipe.py's bookkeeping: a partial rerun keeps the other rows, seeds
are summarised as mean and range, failed runs stay visible."""

import importlib.util
import json
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def sweep():
    path = os.path.join(HERE, "..", "bench", "sweep_recipe.py")
    spec = importlib.util.spec_from_file_location("sweep_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(name, seed, top1, minutes=3.0):
    return {"name": name, "seed": seed, "flags": [f"--{name}"], "linear_top1": top1,
            "knn_top1": top1 - 0.05, "knn20_top1": None, "train_minutes": minutes - 1,
            "minutes": minutes}


def test_merged_rows_replace_the_same_setting_and_seed_only(sweep, tmp_path):
    path = tmp_path / "sweep.json"
    earlier = [_row("a", 0, 0.80), _row("a", 1, 0.81), _row("b", 0, 0.70)]
    path.write_text(json.dumps({"rows": earlier}))
    merged = sweep.merged_rows(str(path), [_row("a", 1, 0.90)])
    assert [(r["name"], r["seed"], r["linear_top1"]) for r in merged] == [
        ("a", 0, 0.80), ("b", 0, 0.70), ("a", 1, 0.90)]
    assert sweep.merged_rows(str(tmp_path / "absent.json"), earlier) == earlier


def test_summarise_gives_mean_and_range_over_seeds_and_keeps_errors(sweep):
    rows = [_row("a", 0, 0.80, 3.0), _row("a", 1, 0.86, 5.0), _row("a", 2, 0.83, 4.0),
            {"name": "a", "seed": 3, "flags": ["--a"], "error": "exit 1"},
            {"name": "c", "seed": 0, "flags": ["--c"], "error": "exit 2, see c.log"}]
    summary = sweep.summarise(rows)
    assert summary["a"]["seeds"] == [0, 1, 2]  # the failed seed is not averaged in
    assert summary["a"]["linear_top1"] == pytest.approx(0.83)
    assert summary["a"]["linear_top1_range"] == (0.80, 0.86)
    assert summary["a"]["minutes"] == pytest.approx(4.0)
    assert "knn20_top1" not in summary["a"]  # no run measured it
    assert summary["c"] == {"error": "exit 2, see c.log"}
    table = sweep.markdown(summary).splitlines()
    assert table[2].startswith("| a | --a | 83.00% (80.00-86.00) | 78.00% (75.00-81.00) |  |")
    assert "4.0 (3.0-5.0) | 3 |" in table[2]
    assert table[3] == "| c | | error: exit 2, see c.log | | | | | |"
