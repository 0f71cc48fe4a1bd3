"""Errors by cause, and the exit status each one gives a command line.

Free of TensorFlow, so the command lines can report bad input without loading it.
Every error a user can fix by changing a flag, a path or the data is a `UsageError`
(exit status 2); `TrainingDiverged` (3) and `Terminated` (143, as for SIGTERM) are
outcomes of a run. `exit_status(error)` is the one table the command lines use, and
`exit_with(error)` the one way they end on an error.
"""

import sys


class UsageError(ValueError):
    """Input that cannot run as given; the message names the value and what was expected."""


class ConfigError(UsageError):
    """A flag value, or a combination of them, that cannot run."""


class DataError(UsageError):
    """Data that cannot be read as asked: missing, unprepared, malformed or empty."""


class CheckpointError(UsageError):
    """A checkpoint that is missing, unreadable, or of another architecture."""


class StorageError(UsageError):
    """An output directory that cannot be written, or lacks the space a run needs."""


class ExportError(UsageError):
    """A bad export request: an existing export_dir, a bad variant or flag combination."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class Terminated(RuntimeError):
    """SIGTERM arrived; the current step was saved."""


EXIT_STATUSES = ((UsageError, 2), (TrainingDiverged, 3), (Terminated, 143))


def exit_status(error):
    """The process exit status for `error`, or None when it is not one of ours."""
    for error_type, status in EXIT_STATUSES:
        if isinstance(error, error_type):
            return status
    return None


def exit_with(error, log=None):
    """Ends the process for one of our errors with exit_status(error).

    The message goes to stderr as one line, `error: <message>` (a Terminated run
    only logs it: it is an outcome, not a mistake); `log` (e.g. absl.logging) also
    records it, as a warning for Terminated and an error otherwise.
    """
    message = " ".join(str(error).split())
    terminated = isinstance(error, Terminated)
    if log is not None:
        (log.warning if terminated else log.error)("%s", message)
    if not terminated:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_status(error))
