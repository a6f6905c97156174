"""How the command line names settings and commands in the library's messages: as flags and command lines."""

from __future__ import annotations

import re
from typing import Any

from wnet_zoo.errors import UNSET

FLAGS = {
    "outputs": "output",
    "fmt": "format",
    "onnx_only": "onnx",
    "json_out": "json",
    "source": "from",
    "authors": "author",
    "maintainers": "maintainer",
    "tags": "tag",
    "citations": "cite",
    "server_url": "server",
}
"""Library parameters whose flag has another name (the rest: ``--`` and the name with ``-`` for ``_``)."""

OFF_FLAGS = {"skip_empty_patches": "keep-empty-patches"}
"""Boolean settings whose off switch is not ``--no-`` and the name."""

COMMANDS = {
    "train": ("train", None),
    "finetune": ("finetune", None),
    "resume": ("train", "resume"),
    "export_model": ("export", None),
    "predict_files": ("predict", None),
    "run_report": ("report", None),
    "evaluate_files": ("evaluate", None),
}
"""Public functions as ``wnet-zoo`` commands: the command, and the flag its first argument goes to (None: an
argument)."""


class CliNaming:
    """Settings as flags (``--tile 65,65,65``, ``--overwrite``, ``--no-screen``), calls as command lines."""

    def setting(self, name: str, value: Any = UNSET) -> str:
        flag = FLAGS.get(name, name).replace("_", "-")
        if value is UNSET or value is True or value is None:
            return f"--{flag}"
        if value is False:
            return f"--{OFF_FLAGS.get(name, 'no-' + flag)}"
        return f"--{flag} {_text(value)}"

    def command(self, name: str, *args: Any, **kwargs: Any) -> str:
        command, first = COMMANDS.get(name, (name.replace("_", "-"), None))
        words = ["wnet-zoo", command]
        if args:
            words.append(self.setting(first, args[0]) if first else str(args[0]))
            words += [str(arg) for arg in args[1:]]
        words += [self.setting(key, value) for key, value in kwargs.items()]
        return " ".join(words)


_PLAIN = re.compile(r"[\w.:/+@-]+")


def _text(value: Any) -> str:
    """A value as typed on the command line; text in quotes where a shell would need them (or to show its ends)."""
    if isinstance(value, (tuple, list)):
        return ",".join(_text(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else repr(value)
    return str(value)
