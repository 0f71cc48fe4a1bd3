"""Errors of hub_export (no TensorFlow import, so the CLI reports them quickly)."""


class ExportError(ValueError):
    """A bad export request: missing checkpoint, existing export_dir, bad variant..."""
