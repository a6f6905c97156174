"""The exceptions the CLI turns into one line: ``UserError`` (exit code 2), ``TrainingDiverged`` (1) and
``Terminated`` (143)."""


class UserError(Exception):
    """Bad input or options. The message says what is wrong and how to fix it, in at most two lines."""


class TrainingDiverged(Exception):
    """The explosion guard gave up: the message is one line of advice. The CLI exits with code 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by ``timeout``, SLURM, ``docker stop``), raised where Ctrl-C would be, so that every
    output is cleaned up the same way. The CLI exits with code 143, as a process ended by SIGTERM does."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut between words to at most ``limit`` characters (and an ellipsis): a message from
    another library (torch, onnxruntime, bioimageio.spec) can run to pages, and the user's error is one line."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:") + "..."
