"""The one exception type users see: the CLI prints its message and exits with status 2."""


class DlfError(Exception):
    """Bad input or an impossible request, stated in one line for a person to fix."""
