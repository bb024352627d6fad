"""The one exception type the user sees as a one-line ``error: ...`` message."""


class PynnError(Exception):
    """Bad input or an impossible request: printed as one line, exit code 2."""
