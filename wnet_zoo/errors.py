"""The exceptions the CLI turns into one line of advice: ``UserError`` (exit code 2) and ``TrainingDiverged`` (1)."""


class UserError(Exception):
    """Bad input or options. The message says what is wrong and how to fix it, in at most two lines."""


class TrainingDiverged(Exception):
    """The explosion guard gave up: the message is one line of advice. The CLI exits with code 1."""
