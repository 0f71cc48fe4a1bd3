"""Helpers shared by tests (conftest.py sets up the logical CPU devices)."""

NUM_LOGICAL_CPUS = 4


def cpu_devices(n):
    """The first n logical CPU device names, for MirroredStrategy(devices)."""
    if n > NUM_LOGICAL_CPUS:
        raise ValueError(f"n={n} > {NUM_LOGICAL_CPUS} logical CPUs set up in conftest.py")
    return [f"/cpu:{i}" for i in range(n)]
