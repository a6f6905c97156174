"""Reading bioimage.io package descriptions (``rdf.yaml``) without bioimageio.spec: prediction and fine-tuning
only need a few of their fields, and must run where the zoo's packages are not installed."""

from __future__ import annotations

from typing import Any

import yaml

from wnet_zoo.errors import UserError


def read_rdf(text: str, shown: str, fix: str = "") -> dict[str, Any]:
    """The description ``text`` (from a file or a zip member) as a dict; one line naming ``shown`` (and the
    ``fix`` when given) for text that is not a YAML mapping."""
    try:
        description = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{shown}: not a readable bioimage.io rdf.yaml ({type(error).__name__}){fix}") from None
    if not isinstance(description, dict):
        raise UserError(f"{shown}: not a bioimage.io rdf.yaml (no mapping of fields){fix}")
    return description


def wnet_zoo_config(description: dict[str, Any]) -> dict[str, Any]:
    """The ``config.wnet_zoo`` section a wnet-zoo package writes (empty for other packages)."""
    config = description.get("config")
    ours = config.get("wnet_zoo") if isinstance(config, dict) else None
    return ours if isinstance(ours, dict) else {}
