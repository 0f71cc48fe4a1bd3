"""What a long run shows: a progress line per loop and TensorBoard scalars."""

import time

import tensorflow as tf
from absl import logging


def format_duration(seconds):
    """3725 -> '1h02m05s'; 65 -> '1m05s'; 4.2 -> '4s'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Formats `step 40/100 (40%) | loss 5.12 | 812 img/s | ETA 1m10s` lines.

    Throughput is measured between consecutive `update` calls; the ETA uses an
    exponential moving average of seconds per step, so the first loop (which
    includes tracing) does not dominate it.
    """

    def __init__(self, name, total_steps, global_batch_size, start_step, clock=time.monotonic):
        self._name = name
        self._total = total_steps
        self._batch = global_batch_size
        self._clock = clock
        self._last_time = clock()
        self._last_step = start_step
        self._seconds_per_step = None

    def update(self, step, metrics):
        """Records reaching `step`; returns (line, images_per_second)."""
        now = self._clock()
        steps = max(step - self._last_step, 1)
        elapsed = max(now - self._last_time, 1e-9)
        images_per_second = steps * self._batch / elapsed
        current = elapsed / steps
        if self._seconds_per_step is None:
            self._seconds_per_step = current
        else:
            self._seconds_per_step = 0.7 * self._seconds_per_step + 0.3 * current
        self._last_time, self._last_step = now, step
        eta = format_duration(max(self._total - step, 0) * self._seconds_per_step)
        shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = (f"{self._name} step {step}/{self._total} ({100.0 * step / self._total:.0f}%)"
                f" | {shown} | {images_per_second:.0f} img/s | ETA {eta}")
        return line, images_per_second

    def log(self, step, metrics):
        line, images_per_second = self.update(step, metrics)
        logging.info("%s", line)
        return images_per_second


class Summaries:
    """TensorBoard scalars in `directory`; a no-op writer where `enabled` is False."""

    def __init__(self, directory, enabled=True):
        if enabled:
            self._writer = tf.summary.create_file_writer(directory)
        else:
            self._writer = tf.summary.create_noop_writer()

    def scalars(self, step, values, prefix=""):
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(prefix + name, value)
        self._writer.flush()
