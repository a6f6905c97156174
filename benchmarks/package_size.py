"""The size of the bioimage.io package of CellSeg3D's default architecture, file by file.

    python benchmarks/package_size.py --work DIR [--out JSON]

Exports a seeded, freshly initialised WNet3D of the default architecture (channels 64,128,256,512; the weights'
values change the zip's compression a little, not the files) with ``wnet-zoo export`` and lists each member of the
package (bytes stored, bytes unpacked), the zip's total and its ratio to the 434 MB the package took when each
weight was stored twice (issue 19's measure; the zoo's target is at most 60 % of it). Results in
``benchmarks/results/package_size.json`` with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from quality import machine  # noqa: E402

RESULTS = HERE / "results" / "package_size.json"
EARLIER_MB = 434.0  # the default-architecture package with the whole WNet3D attached beside the encoder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the weights and the export")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from wnet_zoo.export.exporter import export_model
    from wnet_zoo.model.wnet import WNet3D

    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    weights = args.work / "default_architecture.pth"
    torch.save(WNet3D().state_dict(), weights)
    result = export_model(weights, args.work / "export", overwrite=True)
    assert result.package is not None
    with zipfile.ZipFile(result.package) as archive:
        members = {
            info.filename: {
                "stored_mb": round(info.compress_size / 1e6, 2),
                "unpacked_mb": round(info.file_size / 1e6, 2),
            }
            for info in archive.infolist()
        }
    total = result.package.stat().st_size / 1e6
    record = {
        "date": datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        "what": "bioimage.io package of the default architecture (64,128,256,512), seeded initial weights",
        "machine": machine(None),
        "package_mb": round(total, 1),
        "earlier_mb": EARLIER_MB,
        "ratio_to_earlier": round(total / EARLIER_MB, 3),
        "members": dict(sorted(members.items(), key=lambda item: -item[1]["stored_mb"])),
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    for name, sizes in record["members"].items():
        print(f"{name:32s} {sizes['stored_mb']:8.1f} MB stored  {sizes['unpacked_mb']:8.1f} MB unpacked")
    print(f"package {total:.1f} MB = {total / EARLIER_MB:.0%} of the earlier {EARLIER_MB:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
