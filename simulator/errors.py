"""The one exception type the simulator raises for bad input."""


class SimulatorError(ValueError):
    """Bad architecture file, workload or container; the message is one readable line."""
