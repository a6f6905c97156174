"""Does an exported package run in every bioimage.io consumer? Each consumer's runtime in its own environment.

    python benchmarks/consumers.py [--package ZIP] [--envs DIR] [--only NAME ...] [--out JSON]

Builds one virtual environment per consumer (the versions the zoo's compatibility checks and shared runtime use,
as far as they install from PyPI here), cached under ``--envs`` and rebuilt only when its requirements change,
then runs the package there in each weight format (``wnet_zoo/zoo/consumer_run.py``): bioimageio.core's
``test_model`` and prediction, BiaPy's compatibility check, or the bare runtime that the Java consumers
(deepImageJ, Icy through JDLL) use. Without ``--package`` it exports the bundled model with every weight format
and an author and maintainer (the package a user uploads). A cell passes when the consumer accepts the package and
its outputs are within 1e-3 of the package's test output. Results in ``benchmarks/results/consumers.json`` with the
machine and each environment's versions; ``--table`` prints the docs' table from that file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from wnet_zoo.zoo.consumers import (  # noqa: E402
    CONSUMERS,
    FORMATS,
    NOT_RUN,
    TOLERANCE,
    build_environment,
    environments_folder,
    installed_versions,
    run_package,
)

from quality import machine  # noqa: E402

RESULTS = HERE / "results" / "consumers.json"


def export_bundled(work: Path) -> Path:
    """The bundled model exported as a user uploads it: every weight format, an author and a maintainer."""
    from wnet_zoo.export.exporter import export_model
    from wnet_zoo.export.model_card import CardUpdate

    update = CardUpdate(
        authors=("wnet-zoo benchmark;bioimageiobot",), maintainers=("wnet-zoo benchmark;bioimageiobot",)
    )
    result = export_model("bundled", work / "export", card_update=update, torchscript=True, overwrite=True)
    assert result.package is not None
    return result.package


def render_table(record: dict[str, Any]) -> str:
    """The docs' table (markdown): one row per consumer, one column per weight format."""
    lines = ["| consumer | stands for | " + " | ".join(FORMATS) + " |", "|---|---|" + "---|" * len(FORMATS)]
    for name, entry in record["consumers"].items():
        cells = []
        about = entry["stands_for"] if "reason" not in entry else entry["reason"]
        for weight_format in FORMATS:
            cell = entry.get("cells", {}).get(weight_format)
            if cell is None:
                cells.append("-" if "reason" not in entry else "not run")
                continue
            mark = "passed" if cell["status"] == "passed" else f"**{cell['status']}**"
            if cell.get("max_abs_diff") is not None:
                mark += f" ({cell['max_abs_diff']:.1g})"
            cells.append(mark)
        lines.append(f"| {name} | {about} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path, help="package to run (default: the bundled model, exported)")
    parser.add_argument("--envs", type=Path, default=environments_folder(), help="where environments are cached")
    parser.add_argument("--only", nargs="*", help="consumer names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the docs' table from --out and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(render_table(json.loads(args.out.read_text())))
        return 0

    args.envs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        package = args.package or export_bundled(Path(work))
        record: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
            "package": {"file": package.name, "mb": round(package.stat().st_size / 1e6, 1)},
            "tolerance": TOLERANCE,
            "machine": machine(None),
            "consumers": {},
        }
        for consumer in CONSUMERS:
            if args.only and consumer.name not in args.only:
                continue
            print(f"{consumer.name}: {consumer.stands_for}", flush=True)
            python, how = build_environment(consumer, args.envs)
            entry: dict[str, Any] = {"stands_for": consumer.stands_for, "requirements": list(consumer.requirements)}
            if python is None:
                entry["reason"] = how
                print(f"  {how}")
                record["consumers"][consumer.name] = entry
                continue
            entry["versions"] = installed_versions(python, consumer)
            entry["cells"] = {}
            for weight_format in consumer.formats:
                cell = run_package(python, consumer, package, weight_format)
                entry["cells"][weight_format] = cell
                shown = cell.get("max_abs_diff")
                print(
                    f"  {weight_format:20s} {cell['status']}" + ("" if shown is None else f"  max |diff| {shown:.2g}")
                )
                if cell["status"] != "passed":
                    print("    " + str(cell.get("details", ""))[:400].replace("\n", "\n    "))
            record["consumers"][consumer.name] = entry
        for name, reason in NOT_RUN.items():
            record["consumers"][name] = {"stands_for": name, "reason": reason}
    print()
    if args.only and args.out.exists():  # a subset replaces its own rows only
        record["consumers"] = {**json.loads(args.out.read_text())["consumers"], **record["consumers"]}
    part = args.out.with_suffix(".part")
    part.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(part, args.out)
    print(render_table(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
