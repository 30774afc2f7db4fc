"""The one exception type the converter raises for bad input: the CLI prints its message, never a traceback."""


class ConversionError(Exception):
    """A problem the user can fix (bad file, bad data, unknown board, failed accuracy gate)."""
