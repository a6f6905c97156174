"""The templates of ``wnet_zoo/export/templates/`` and how they are filled in.

``rdf.yaml`` is loaded as YAML first and filled in value by value, so that no value can break the YAML:
a string that is exactly ``${key}`` becomes ``values[key]`` whatever its type, ``${sha256:FILE}`` the
SHA-256 of ``FILE`` in the package folder, and a mapping entry whose value is ``None`` is left out.
``README.md`` is text: each ``${key}`` becomes ``str(values[key])``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDER = re.compile(r"\$\{([a-z0-9_]+)(?::([^}]+))?\}")


def read_template(name: str) -> str:
    """The text of ``templates/<name>``."""
    return (resources.files("wnet_zoo.export") / "templates" / name).read_text(encoding="utf-8")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a description that names a packaged file with its hash (``source`` and ``sha256``)."""
    if isinstance(node, dict):
        if isinstance(node.get("source"), str) and isinstance(node.get("sha256"), str):
            yield node
        for value in node.values():
            yield from file_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from file_entries(item)


def render_text(template: str, values: Mapping[str, Any]) -> str:
    """Replace every ``${key}`` by ``str(values[key])``; a key without a value raises ``KeyError``."""
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template)


def render_yaml(template: str, values: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """Load a YAML template and fill in its placeholders (see the module docstring)."""
    return _fill(yaml.safe_load(template), values, folder)


def _fill(node: Any, values: Mapping[str, Any], folder: Path) -> Any:
    if isinstance(node, dict):
        filled = {key: _fill(value, values, folder) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not None}
    if isinstance(node, list):
        return [_fill(item, values, folder) for item in node]
    if not isinstance(node, str):
        return node
    match = _PLACEHOLDER.fullmatch(node)
    if match is None:
        return render_text(node, values)
    key, argument = match.groups()
    if key == "sha256":
        return sha256(folder / argument)
    return values[key]
