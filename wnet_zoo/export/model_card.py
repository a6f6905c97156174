"""Model cards: the YAML files (``wnet_zoo/export/cards/*.yaml``) that say who made a model,
what it is for and how to cite it, everything a bioimage.io package needs that weights cannot tell."""

from __future__ import annotations

import difflib
import re
import string
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import yaml

from wnet_zoo.errors import UserError, setting

REQUIRED = ("name", "description", "authors", "license", "citations", "documentation")
DEFAULT_CARD = "wnet3d.yaml"
_PERSON_KEYS = {"name", "affiliation", "email", "orcid", "github_user"}
_TRAINING_KEYS = {"description", "source", "voxel_size", "unit"}
_NAME_CHARACTERS = string.ascii_letters + string.digits + "_+- ()"  # what bioimage.io allows in a name
_UNIT_ABBREVIATIONS = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "Å": "angstrom",
}


@dataclass
class ModelCard:
    """What a model card holds (``REQUIRED`` fields must be present and non-empty).

    Attributes:
        name: model name (letters, digits, spaces and ``_+-()``; 5 to 64 characters).
        description: one or two sentences.
        authors: who made the model: mappings with ``name`` and optionally ``affiliation``, ``email``,
            ``orcid``, ``github_user``.
        license: an SPDX licence identifier, e.g. ``MIT`` or ``CC-BY-4.0``.
        citations: mappings with ``text`` and a ``doi`` or ``url``.
        documentation: markdown text for the package's documentation page.
        maintainers: mappings like ``authors`` that must have a ``github_user``.
        tags: keywords.
        training_data: ``description``, optional ``source`` (a URL), ``voxel_size`` (``{z, y, x}``) and its
            ``unit`` (default ``micrometer``).
        version: the model's version, e.g. ``1.0``.
        git_repo: URL of the code that trained it.
        source: the card file.
    """

    name: str
    description: str
    authors: list[dict[str, str]]
    license: str
    citations: list[dict[str, str]]
    documentation: str
    maintainers: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    training_data: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    git_repo: str | None = None
    source: Path = Path(DEFAULT_CARD)

    @property
    def file_stem(self) -> str:
        """The name as a file name: lower case, other characters as ``-`` (``WNet3D nuclei``: ``wnet3d-nuclei``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    @property
    def voxel_size(self) -> tuple[float, float, float] | None:
        """The training data's (z, y, x) voxel size, when the card gives it."""
        size = self.training_data.get("voxel_size")
        return None if size is None else (float(size["z"]), float(size["y"]), float(size["x"]))

    @property
    def voxel_unit(self) -> str | None:
        """The unit of ``voxel_size`` (``micrometer`` unless the card says otherwise), ``None`` without one."""
        return None if self.voxel_size is None else str(self.training_data.get("unit", "micrometer"))


PERSON_FORM = "NAME[;GITHUB_USER[;AFFILIATION[;ORCID]]]"
CITATION_FORM = "TEXT;DOI_OR_URL"
PLACEHOLDER_AUTHOR = "wnet-zoo developers"  # the default card's author: the packaging tool, not a model's


@dataclass(frozen=True)
class CardUpdate:
    """Card fields given beside the card file (the command line's ``--author``, ``--maintainer``, ...): each one
    set replaces the card's field.

    Attributes:
        name, description, license: as in :class:`ModelCard`.
        authors, maintainers: people as ``"NAME[;GITHUB_USER[;AFFILIATION[;ORCID]]]"`` (empty parts skipped,
            e.g. ``"Jane Doe;;EPFL"``); a maintainer needs a GitHub user.
        tags: keywords.
        citations: ``"TEXT;DOI_OR_URL"`` (a DOI such as ``10.7554/eLife.99848``, or an ``http(s)://`` URL).
    """

    name: str | None = None
    description: str | None = None
    license: str | None = None
    authors: tuple[str, ...] = ()
    maintainers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    citations: tuple[str, ...] = ()

    def card_fields(self) -> dict[str, Any]:
        """The card fields this update sets, as a card file would hold them."""
        if self.name is not None:
            _check_name(self.name, setting("name", self.name))
        if self.license is not None:
            _check_license(self.license, setting("license", self.license))
        if self.description is not None and not self.description.strip():
            raise UserError(f"{setting('description', self.description)}: give one or two sentences")
        values: dict[str, Any] = {
            key: value
            for key, value in (("name", self.name), ("description", self.description), ("license", self.license))
            if value is not None
        }
        if self.authors:
            values["authors"] = [parse_person(text, "authors") for text in self.authors]
        if self.maintainers:
            values["maintainers"] = [parse_person(text, "maintainers") for text in self.maintainers]
        if self.tags:
            values["tags"] = list(self.tags)
        if self.citations:
            values["citations"] = [parse_citation(text) for text in self.citations]
        return values


def parse_person(text: str, role: str = "authors") -> dict[str, str]:
    """A person of ``"NAME[;GITHUB_USER[;AFFILIATION[;ORCID]]]"`` as a card's mapping; ``UserError`` when a part is
    missing (a name; for ``role`` ``maintainers``, a GitHub user) or there are too many."""
    parts = [part.strip() for part in text.split(";")]
    if len(parts) > 4 or not parts[0]:
        raise UserError(f"{setting(role, text)}: give {PERSON_FORM}, e.g. 'Jane Doe;janedoe;EPFL'")
    person = {
        key: part for key, part in zip(("name", "github_user", "affiliation", "orcid"), parts, strict=False) if part
    }
    if role == "maintainers" and "github_user" not in person:
        raise UserError(f"{setting(role, text)}: a maintainer answers on GitHub; give 'NAME;GITHUB_USER'")
    return person


def parse_citation(text: str) -> dict[str, str]:
    """A citation of ``"TEXT;DOI_OR_URL"`` as a card's mapping (``doi`` or ``url``)."""
    body, _, link = text.rpartition(";")
    body, link = body.strip(), link.strip()
    if not body or not link:
        raise UserError(f"{setting('citations', text)}: give {CITATION_FORM}, e.g. 'Doe J. (2026). Title.;10.1234/x'")
    return {"text": body, ("url" if link.startswith(("http://", "https://")) else "doi"): link}


def zoo_gaps(card: ModelCard) -> list[str]:
    """What bioimage.io's curators refuse in this card: no maintainer, or the default card's placeholder author."""
    gaps = []
    if not card.maintainers:
        gaps.append(f"no maintainer ({setting('maintainers', 'NAME;GITHUB_USER')})")
    if any(person.get("name") == PLACEHOLDER_AUTHOR for person in card.authors):
        gaps.append(f"the author is the default card's {PLACEHOLDER_AUTHOR!r} ({setting('authors', PERSON_FORM)})")
    return gaps


def default_card_path() -> Path:
    """The card used when none is given: ``wnet_zoo/export/cards/wnet3d.yaml``, the default WNet3D."""
    return Path(str(resources.files("wnet_zoo.export") / "cards" / DEFAULT_CARD))


def bundled_cards() -> dict[str, Path]:
    """The cards shipped with wnet-zoo (``wnet_zoo/export/cards/*.yaml``), by name without ``.yaml``."""
    folder = default_card_path().parent
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def read_card(path: str | Path | None = None, update: CardUpdate | None = None) -> ModelCard:
    """Read and check a model card: a YAML file, the name of a bundled card (``wnet3d``), or the default card
    when ``path`` is None, with the fields ``update`` sets replaced. Raises ``UserError`` naming the field that is
    missing or wrong."""
    path = default_card_path() if path is None else Path(path)
    if not path.exists() and str(path) in bundled_cards():
        path = bundled_cards()[str(path)]
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        names = ", ".join(bundled_cards())
        raise UserError(f"{path}: no such model card (bundled: {names}); start from {default_card_path()}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: model card is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a model card must be a YAML mapping of fields (see {default_card_path()})")
    if update is not None:
        data = {**data, **update.card_fields()}
    known = [f.name for f in fields(ModelCard) if f.name != "source"]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"fields are {', '.join(known)}"
            raise UserError(f"{path}: unknown model card field {key!r}; {hint}")
    for name in REQUIRED:
        if data.get(name) in (None, "", [], {}):
            raise UserError(f"{path}: model card is missing required field {name!r} (required: {', '.join(REQUIRED)})")
    _check(path, data)
    values = {key: value for key, value in data.items() if value is not None}
    for key in ("version", "git_repo", "license", "name"):
        if key in values:
            values[key] = str(values[key])
    return ModelCard(**values, source=path)


def _check(path: Path, data: dict[str, Any]) -> None:
    """Types and shapes of the fields; the bioimage.io validation later checks their values."""

    def fail(message: str) -> None:
        raise UserError(f"{path}: model card field {message}")

    for key in ("name", "description", "documentation"):
        if not isinstance(data[key], str):
            fail(f"{key!r} must be text")
    for key in ("authors", "maintainers"):
        people = data.get(key) or []
        if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
            fail(f"{key!r} must be a list of mappings with a 'name'")
        for person in people:
            if set(person) - _PERSON_KEYS:
                fail(f"{key!r}: unknown key(s) {sorted(set(person) - _PERSON_KEYS)}; use {sorted(_PERSON_KEYS)}")
            if key == "authors" and not person.get("name"):
                fail("'authors': every author needs a 'name'")
            if key == "maintainers" and not person.get("github_user"):
                fail("'maintainers': every maintainer needs a 'github_user'")
    citations = data["citations"]
    if not isinstance(citations, list) or not all(
        isinstance(c, dict) and c.get("text") and (c.get("doi") or c.get("url")) for c in citations
    ):
        fail("'citations' must be a list of mappings with 'text' and a 'doi' or 'url'")
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        fail("'tags' must be a list of words")
    training = data.get("training_data") or {}
    if not isinstance(training, dict) or set(training) - _TRAINING_KEYS:
        fail(f"'training_data' must be a mapping with some of {sorted(_TRAINING_KEYS)}")
    size = training.get("voxel_size")
    if size is not None and not (
        isinstance(size, dict)
        and set(size) == {"z", "y", "x"}
        and all(isinstance(v, (int, float)) and v > 0 for v in size.values())
    ):
        fail("'training_data.voxel_size' must be a mapping of z, y, x to positive numbers")
    _check_values(path, data)


def _check_values(path: Path, data: dict[str, Any]) -> None:
    """The values bioimage.io restricts, checked here so that the error is one line with the likely fix:
    bioimage.io's own message for a wrong license lists all 700 SPDX identifiers, one for a wrong version is a
    traceback."""
    _check_name(str(data["name"]), str(path))
    if data.get("version") is not None:
        _check_version(data["version"], str(path))
    _check_license(data["license"], str(path))
    unit = (data.get("training_data") or {}).get("unit")
    if unit is not None:
        _check_unit(unit, str(path))


def _check_name(name: str, where: str) -> None:
    if not 5 <= len(name) <= 128:
        raise UserError(f"{where}: name must be 5 to 128 characters long, not {len(name)}")
    wrong = sorted(set(name) - set(_NAME_CHARACTERS))
    if wrong:
        shown = "".join(wrong[:5])
        raise UserError(f"{where}: name {name!r} may hold only letters, digits, spaces and _+-() (not {shown!r})")


def _check_version(version: Any, where: str) -> None:
    from packaging.version import InvalidVersion, Version

    try:
        Version(str(version))
    except InvalidVersion:
        raise UserError(f"{where}: version {_short(version)} is not a version number; give e.g. 1.0 or 1.2.3") from None


def _check_license(license_id: Any, where: str) -> None:
    licenses, _ = _bioimageio_choices()
    if licenses and str(license_id) not in licenses:
        raise UserError(
            f"{where}: license {_short(license_id)} is not an SPDX identifier; "
            + _suggest(str(license_id), licenses, "give one, e.g. MIT or CC-BY-4.0")
        )


def _check_unit(unit: Any, where: str) -> None:
    _, units = _bioimageio_choices()
    if units and str(unit) not in units:
        close = _UNIT_ABBREVIATIONS.get(str(unit).strip())
        raise UserError(
            f"{where}: training_data.unit {_short(unit)} is not one of bioimage.io's units; "
            + (
                f"did you mean {close}?"
                if close
                else _suggest(str(unit), units, "give a unit of length, e.g. micrometer or nanometer")
            )
        )


def _bioimageio_choices() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The SPDX licence identifiers (deprecated ones included) and space units bioimage.io accepts; empty
    without bioimageio.spec (the export says to install it)."""
    try:
        from bioimageio.spec._internal.license_id import DeprecatedLicenseIdLiteral, LicenseIdLiteral
        from bioimageio.spec.model.v0_5 import SpaceUnit
    except ImportError:
        return (), ()
    return get_args(LicenseIdLiteral) + get_args(DeprecatedLicenseIdLiteral), get_args(SpaceUnit)


def _suggest(value: str, choices: tuple[str, ...], otherwise: str) -> str:
    """ "did you mean A, B or C?" with the closest of ``choices`` (ignoring case), else ``otherwise``."""
    by_lower = {choice.lower(): choice for choice in choices}
    if value.lower() in by_lower:
        return f"did you mean {by_lower[value.lower()]}?"
    close = [by_lower[match] for match in difflib.get_close_matches(value.lower(), list(by_lower), n=3)]
    if not close:
        return otherwise
    return f"did you mean {close[0]}?" if len(close) == 1 else f"did you mean {', '.join(close[:-1])} or {close[-1]}?"


def _short(value: Any) -> str:
    """``repr(value)``, cut to a length that fits in an error line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
