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


class _Log:
    def __init__(self):
        self.lines = []

    def warning(self, fmt, message):
        self.lines.append(("warning", fmt % message))

    def error(self, fmt, message):
        self.lines.append(("error", fmt % message))


@pytest.mark.parametrize("error, status, stderr, logged", [
    (errors.DataError("split 'x'\n  is empty;\texpected more"), 2,
     "error: split 'x' is empty; expected more\n", "error"),
    (errors.TrainingDiverged("loss nan"), 3, "error: loss nan\n", "error"),
    (errors.Terminated("SIGTERM at step 4"), 143, "", "warning"),
])
def test_exit_with_prints_one_line_and_exits_with_the_status(error, status, stderr, logged,
                                                            capsys):
    log = _Log()
    with pytest.raises(SystemExit) as exited:
        errors.exit_with(error, log=log)
    assert exited.value.code == status
    assert capsys.readouterr().err == stderr
    assert log.lines == [(logged, " ".join(str(error).split()))]
