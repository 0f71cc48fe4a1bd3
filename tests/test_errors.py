"""tf_simclr.errors: errors by cause, one exit status table for both command lines."""

import subprocess
import sys

import pytest

from tf_simclr import errors


@pytest.mark.parametrize("error, status", [
    (errors.ConfigError("x"), 2), (errors.DataError("x"), 2), (errors.CheckpointError("x"), 2),
    (errors.StorageError("x"), 2), (errors.ExportError("x"), 2),
    (errors.TrainingDiverged("x"), 3), (errors.Terminated("x"), 143), (KeyError("x"), None),
])
def test_exit_status_by_cause(error, status):
    assert errors.exit_status(error) == status


def test_usage_errors_are_value_errors_and_the_module_loads_without_tensorflow():
    assert issubclass(errors.UsageError, ValueError)
    child = subprocess.run(
        [sys.executable, "-c", "import sys, tf_simclr.errors, hub_export.variants; "
         "print('tensorflow' in sys.modules)"], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "False"
