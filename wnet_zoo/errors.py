"""The one exception type for mistakes a user can fix: the CLI prints its message and exits with code 2."""


class UserError(Exception):
    """Bad input or options. The message says what is wrong and how to fix it, in at most two lines."""
