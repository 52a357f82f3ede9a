"""The one exception type of nmlab.pruning for bad input."""


class PruningError(ValueError):
    """Bad model, pattern, data or numbers. The message is one readable line;
    the CLI prints it to stderr without a traceback."""
