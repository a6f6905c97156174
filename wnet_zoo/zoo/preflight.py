"""The checks a package meets on its way into bioimage.io, run locally before anything is sent.

The zoo validates the description (bioimageio.spec), checks that each weight format reproduces the test output
(bioimageio.core's ``test_model``, tolerance 1e-3 relative and absolute), runs it in each consumer (other
bioimageio.core releases, ilastik, BiaPy, the Java tools), and its curators ask for maintainers, real authors, a
cover under 500 KB of width:height 2:1 or 1:1, and documentation with a ``## Validation`` section. Everything here
runs offline: GitHub user names are checked by the zoo, not here, and the consumers only where their environments
were built (:mod:`wnet_zoo.zoo.consumers`).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from wnet_zoo.errors import UserError, command, setting, shorten
from wnet_zoo.export.model_card import PERSON_FORM, PLACEHOLDER_AUTHOR
from wnet_zoo.export.rdf import file_entries, sha256
from wnet_zoo.prediction.model_files import rdf_in_folder, unzip_package
from wnet_zoo.zoo.consumers import CONSUMERS, TOLERANCE, environments_folder, existing_environment, run_package

ZOO_TOLERANCE = TOLERANCE

COVER_MAX_BYTES = 500 * 1024
COVER_RATIOS = (2.0, 1.0)
NOT_CHECKED = "GitHub user names (the zoo looks them up online)"
UNBUILT = "consumers without an environment here ({}; python benchmarks/consumers.py in a source checkout builds them)"
_VALIDATION_HEADING = re.compile(r"^#{1,2} *Validation\b", re.MULTILINE)


@dataclass(frozen=True)
class Check:
    """One check: its name, whether it passed, what was found, and the fix when it failed."""

    name: str
    passed: bool
    found: str
    fix: str = ""


@dataclass(frozen=True)
class Preflight:
    """The verdicts on one package."""

    package: Path
    checks: tuple[Check, ...]
    not_checked: tuple[str, ...] = (NOT_CHECKED,)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(check.passed for check in self.checks)

    def report(self) -> str:
        """One line a check, then what was not checked and the verdict."""
        width = max(len(check.name) for check in self.checks)
        lines = [f"bioimage.io pre-flight of {self.package}"]
        for check in self.checks:
            verdict = "PASS" if check.passed else "FAIL"
            fix = f"; {check.fix}" if check.fix and not check.passed else ""
            lines.append(f"  {verdict}  {check.name:{width}}  {check.found}{fix}")
        lines.append(f"  not checked here: {'; '.join(self.not_checked)}")
        failed = sum(not check.passed for check in self.checks)
        lines.append(
            "every check passed" if not failed else f"{failed} check(s) failed: bioimage.io would refuse this package"
        )
        return "\n".join(lines)


def preflight(package: str | Path, run_weights: bool = True, consumer_envs: Path | None = None) -> Preflight:
    """Run the zoo's checks on ``package`` (a ``.zip``, its folder or its ``rdf.yaml``); ``run_weights=False`` skips
    running the weights (reproducibility and consumers, the slow checks). Consumers run where their environments
    exist in ``consumer_envs`` (default :func:`~wnet_zoo.zoo.consumers.environments_folder`). ``UserError`` when
    it is no package."""
    package = Path(package)
    try:
        import bioimageio.core  # noqa: F401
    except ImportError:
        raise UserError(
            "checking a package as bioimage.io does needs bioimageio.core: pip install 'wnet-zoo[zoo]'"
        ) from None
    with package_description(package) as (rdf, rdf_path):
        folder = rdf_path.parent
        checks = [_files(rdf, folder)]
        descr, format_check = _format(rdf_path)
        checks += [format_check, _maintainers(rdf), _authors(rdf), _cover(rdf, folder), _documentation(rdf, folder)]
        not_checked = [NOT_CHECKED]
        if run_weights:
            checks.append(_reproducibility(descr))
            envs = consumer_envs or environments_folder()
            consumers = _consumers(rdf, rdf_path, envs)
            if consumers is not None:
                checks.append(consumers)
            unbuilt = [consumer.name for consumer in CONSUMERS if existing_environment(consumer, envs) is None]
            if unbuilt:
                not_checked.append(UNBUILT.format(", ".join(unbuilt)))
    return Preflight(package, tuple(checks), tuple(not_checked))


def maintainers_check(package: str | Path) -> Check:
    """The maintainers check alone: it reads the description only (no file hashes, no validation)."""
    with package_description(Path(package)) as (rdf, _):
        return _maintainers(rdf)


@contextlib.contextmanager
def package_description(package: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """The description of ``package`` (a ``.zip``, its folder or its ``rdf.yaml``) as plain data, and its path (in
    a temporary folder for a zip, removed on leaving). ``UserError`` when it is no package."""
    with _unpacked(package) as rdf_path:
        try:
            rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            rdf = None
        if not isinstance(rdf, dict):
            raise UserError(f"{package}: its rdf.yaml is not a readable bioimage.io description; export it again")
        yield rdf, rdf_path


@contextlib.contextmanager
def _unpacked(package: Path) -> Iterator[Path]:
    """The path of the package's description, a zip unpacked into a temporary folder."""
    if package.is_dir():
        yield rdf_in_folder(package)
    elif package.name.endswith((".yaml", ".yml")) and package.is_file():
        yield package
    elif package.is_file() and zipfile.is_zipfile(package):
        with tempfile.TemporaryDirectory(prefix="wnet-zoo-") as folder:
            unzip_package(package, Path(folder))
            yield rdf_in_folder(Path(folder), package)
    else:
        raise UserError(f"{package}: no such bioimage.io package; give the .zip that {command('export_model')} wrote")


def _files(rdf: dict[str, Any], folder: Path) -> Check:
    """Every file the description names is there with the SHA-256 it states."""
    listed = list(file_entries(rdf))
    wrong = [
        entry["source"]
        for entry in listed
        if not (folder / entry["source"]).is_file() or sha256(folder / entry["source"]) != entry["sha256"]
    ]
    if wrong:
        return Check("files", False, f"{', '.join(wrong[:3])} missing or changed", "export the package again")
    return Check("files", True, f"{len(listed)} files match their SHA-256")


def _format(rdf_path: Path) -> tuple[Any, Check]:
    """bioimageio.spec's validation, offline: errors and warnings both fail (curators see the warnings)."""
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(rdf_path, perform_io_checks=False)
    summary = descr.validation_summary
    if isinstance(descr, InvalidDescr):
        error = summary.errors[0]
        return None, Check("format", False, f"{'.'.join(map(str, error.loc))}: {error.msg}", "export it again")
    if descr.type != "model":
        return None, Check("format", False, f"a {descr.type} description, not a model", "give a model package")
    warnings = [warning for detail in summary.details for warning in detail.warnings]
    if warnings:
        where = ".".join(map(str, warnings[0].loc)) or "description"
        return descr, Check("format", False, f"{len(warnings)} warning(s), first: {where}: {warnings[0].msg}")
    return descr, Check("format", True, f"bioimage.io {descr.type} {descr.format_version}, no warnings")


def _maintainers(rdf: dict[str, Any]) -> Check:
    people = [p for p in rdf.get("maintainers") or [] if isinstance(p, dict) and p.get("github_user")]
    if not people:
        return Check("maintainers", False, "none", f"export again with {setting('maintainers', 'NAME;GITHUB_USER')}")
    return Check("maintainers", True, ", ".join(str(p["github_user"]) for p in people))


def _authors(rdf: dict[str, Any]) -> Check:
    names = [str(p.get("name")) for p in rdf.get("authors") or [] if isinstance(p, dict)]
    if not names or PLACEHOLDER_AUTHOR in names:
        found = f"the default card's {PLACEHOLDER_AUTHOR!r}" if names else "none"
        return Check("authors", False, found, f"export again with {setting('authors', PERSON_FORM)}")
    return Check("authors", True, ", ".join(names))


def _cover(rdf: dict[str, Any], folder: Path) -> Check:
    from PIL import Image, UnidentifiedImageError

    covers = [c.get("source") if isinstance(c, dict) else c for c in rdf.get("covers") or []]
    if not covers:
        return Check(
            "cover",
            False,
            "none",
            f"the zoo shows a cover image: export with {command('export_model')}, which draws one",
        )
    for name in covers:
        path = folder / str(name)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, UnidentifiedImageError):
            return Check("cover", False, f"{name} is not a readable image", "export the package again")
        size = path.stat().st_size
        if size > COVER_MAX_BYTES or not any(abs(width / height - r) < 0.01 for r in COVER_RATIOS):
            found = f"{name}: {size / 1024:.0f} KB, {width}x{height}"
            return Check("cover", False, found, "the zoo wants under 500 KB and width:height 2:1 or 1:1")
    return Check("cover", True, f"{len(covers)} image(s) under 500 KB, 2:1 or 1:1")


def _documentation(rdf: dict[str, Any], folder: Path) -> Check:
    source = rdf.get("documentation")
    source = source.get("source") if isinstance(source, dict) else source
    path = folder / str(source)
    if not source or not path.is_file():
        return Check("documentation", False, "no documentation file", "export the package again")
    if not _VALIDATION_HEADING.search(path.read_text(encoding="utf-8", errors="replace")):
        return Check(
            "documentation", False, f"{source} has no '## Validation' section", "add one to the card's documentation"
        )
    return Check("documentation", True, f"{source} with a Validation section")


def _reproducibility(descr: Any) -> Check:
    """bioimageio.core's ``test_model`` on every weight format, at the zoo's tolerance."""
    if descr is None:
        return Check("reproducibility", False, "not run: the description is invalid", "fix the format first")
    from bioimageio.core import test_model

    loose = [
        tolerance
        for tolerance in descr.config.bioimageio.reproducibility_tolerance
        if max(tolerance.relative_tolerance, tolerance.absolute_tolerance) > ZOO_TOLERANCE
        or tolerance.mismatched_elements_per_million
    ]
    if loose:
        found = f"the package loosens its test to {loose[0].relative_tolerance:g} / {loose[0].absolute_tolerance:g}"
        return Check("reproducibility", False, found, f"the zoo tests at {ZOO_TOLERANCE:g}: drop that tolerance")
    summary = test_model(descr)
    failed = [detail for detail in summary.details if detail.status != "passed"]
    formats = ", ".join(sorted(descr.weights.available_formats))
    if failed:
        detail = failed[0]
        message = detail.errors[0].msg.splitlines()[0] if detail.errors else detail.name
        return Check("reproducibility", False, f"{detail.name}: {message}", "export again: the weights must reproduce")
    return Check("reproducibility", True, f"{formats} reproduce the test output within {ZOO_TOLERANCE:g}")


def _consumers(rdf: dict[str, Any], rdf_path: Path, envs: Path) -> Check | None:
    """Each consumer with a built environment runs the package in every weight format it reads (``None`` when
    no environment is built)."""
    present = set(rdf.get("weights") or {})
    runs = [
        (consumer, python)
        for consumer in CONSUMERS
        if (python := existing_environment(consumer, envs)) is not None and present & set(consumer.formats)
    ]
    if not runs:
        return None
    failed, unmeasured = [], []
    for consumer, python in runs:
        for weight_format in sorted(present & set(consumer.formats)):
            report = run_package(python, consumer, rdf_path, weight_format)
            if report["status"] != "passed":
                reason = str(report.get("details") or "failed").splitlines()[0]
                failed.append(f"{consumer.name} ({weight_format}): {shorten(reason)}")
            elif report.get("max_abs_diff") is None:
                unmeasured.append(consumer.name)
    if failed:
        return Check("consumers", False, f"{len(failed)} failed, first: {failed[0]}", "see docs/export.md#consumers")
    found = ", ".join(consumer.name for consumer, _ in runs) + f" run it within {ZOO_TOLERANCE:g}"
    if unmeasured:  # BiaPy checks the description only; a bioimageio.core prediction may fail to be measured
        found += f" (accepted without a measured output: {', '.join(sorted(set(unmeasured)))})"
    return Check("consumers", True, found)
