"""The one exception type the codec raises for bad input."""


class FormatError(ValueError):
    """Malformed stream or container, or an array that violates its pattern.

    The message is one readable line; the CLI prints it without a traceback.
    """
