"""What each choice of the nuclei stages adds, on the masks the quality benchmark's trained models gave.

    python benchmarks/nuclei_choices.py --work DIR [--out JSON] [--masks TEXT]

``DIR`` is a ``benchmarks/quality.py --work`` folder: for each phantom setting it holds, the model's raw mask
(``{name}_predictions/{name}_raw_mask.tif``) is split into nuclei again with the choices of
``wnet_zoo/segment`` switched on one after the other, and scored against the truth: ``before`` (half-max edges
read at a smoothing of 1 on the image as the model saw it, log-compressed where the model compresses, the distance
map smoothed by 1 before seeding, the convex merge by shape alone), then ``edge smoothing`` (each edge read at the
least smoothing its noise allows), ``seed smoothing 0.5`` (the distance map smoothed by half a voxel),
``brightness`` (pieces of unequal brightness stay apart), ``linear intensity`` (the boundaries read the image
uncompressed), ``levels per nucleus`` (the half-max levels read again once the pieces are split, and split once
more) and ``oversized split`` (labels much larger than the nuclei they touch, with a waist, cut into nuclei): the
last is what ``wnet-zoo predict`` does. ``seeds 2 apart`` is an alternative that was not kept (see
``benchmarks/README.md``).
Nothing is trained or predicted; a run takes about a minute per setting. Results go to
``benchmarks/results/nuclei_choices.json``; held-out settings are marked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from wnet_zoo.io.intensity import boundary_view, compress_intensities, remap  # noqa: E402
from wnet_zoo.prediction.metadata import read_metadata  # noqa: E402
from wnet_zoo.segment.convex import merge_convex  # noqa: E402
from wnet_zoo.segment.evaluate import evaluate  # noqa: E402
from wnet_zoo.segment.geometry import relative_spacing  # noqa: E402
from wnet_zoo.segment.half_max import HALF_MAX_EDGE_SIGMAS, half_max_foreground  # noqa: E402
from wnet_zoo.segment.measure import typical_volume  # noqa: E402
from wnet_zoo.segment.nuclei import _remove_small, nuclei_labels, split_and_merge, split_nuclei  # noqa: E402
from wnet_zoo.segment.options import NucleiOptions  # noqa: E402

from phantoms import HELD_OUT, SETTINGS, make_phantom  # noqa: E402
from quality import machine  # noqa: E402

RESULTS = HERE / "results" / "nuclei_choices.json"


class Variant(NamedTuple):
    """One set of choices of the nuclei stages."""

    edges: tuple[float, ...]  # smoothings a half-max edge may be read at
    seed_smoothing: float
    seed_distance: float
    brightness: float | None  # the convex merge's brightness tolerance, None for shape alone
    compressed: bool  # the boundaries read the image as the model saw it (log-compressed)
    per_nucleus: bool  # the levels read again per nucleus (wnet_zoo's stages up to the convex merge, which the
    # choices above must match)
    oversized: bool  # and oversized labels split: all of wnet_zoo's stages


VARIANTS: dict[str, Variant] = {
    "before": Variant((1.0,), 1.0, 3.0, None, True, False, False),
    "edge smoothing": Variant(HALF_MAX_EDGE_SIGMAS, 1.0, 3.0, None, True, False, False),
    "seed smoothing 0.5": Variant(HALF_MAX_EDGE_SIGMAS, 0.5, 3.0, None, True, False, False),
    "brightness": Variant(HALF_MAX_EDGE_SIGMAS, 0.5, 3.0, 0.1, True, False, False),
    "linear intensity": Variant(HALF_MAX_EDGE_SIGMAS, 0.5, 3.0, 0.1, False, False, False),
    "levels per nucleus": Variant(HALF_MAX_EDGE_SIGMAS, 0.5, 3.0, 0.1, False, True, False),
    "oversized split": Variant(HALF_MAX_EDGE_SIGMAS, 0.5, 3.0, 0.1, False, True, True),
    "seeds 2 apart": Variant(HALF_MAX_EDGE_SIGMAS, 0.5, 2.0, 0.1, False, False, False),
}


def nuclei(mask: np.ndarray, image: np.ndarray, spacing: tuple[float, float, float], variant: Variant) -> np.ndarray:
    """The nuclei of ``mask`` as ``wnet_zoo.segment.nuclei.instances`` finds them, with ``variant``'s choices;
    ``image`` is the one the boundaries read."""
    if variant.oversized:
        labels = nuclei_labels(mask, image, spacing, NucleiOptions())
    elif variant.per_nucleus:
        labels = split_and_merge(mask, image, spacing, NucleiOptions(), lambda name: None)
    else:
        labels = split_nuclei(mask, spacing, variant.seed_smoothing, variant.seed_distance)
        foreground = half_max_foreground(labels, image, spacing, variant.edges)
        labels = split_nuclei(foreground, spacing, variant.seed_smoothing, variant.seed_distance)
        if variant.brightness is None:
            labels = merge_convex(labels, spacing)
        else:
            labels = merge_convex(labels, spacing, intensity=image, brightness=variant.brightness)
    return _remove_small(labels, NucleiOptions().min_size_for(typical_volume(labels)))


def setting_scores(work: Path, name: str) -> dict[str, Any]:
    """Each variant's scores on one setting's saved raw mask."""
    metadata = read_metadata(work / f"{name}_export" / "wnet3d.onnx")
    image, truth = make_phantom(name)
    mask = tifffile.imread(work / f"{name}_predictions" / f"{name}_raw_mask.tif") > 0
    image = image.astype(np.float32)
    linear = boundary_view(image, metadata.input_background)
    compressed = boundary_view(compress_intensities(remap(image), metadata.input_log or 0.0), metadata.input_background)
    spacing = relative_spacing(SETTINGS[name].voxel_size)
    found: dict[str, Any] = {"held_out": name in HELD_OUT, "true_nuclei": int(truth.max())}
    for variant, choices in VARIANTS.items():
        labels = nuclei(mask, compressed if choices.compressed else linear, spacing, choices)
        scores = evaluate(labels, truth)
        found[variant] = {
            "fg_dice": round(scores.foreground_dice, 4),
            "f1_at_05": round(scores.f1_at_05, 4),
            "mean_f1": round(scores.mean_f1, 4),
            "nuclei": int(labels.max()),
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks/quality.py --work folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--masks", help="what made the work folder's masks, recorded with the results")
    args = parser.parse_args(argv)
    settings = {}
    for name in SETTINGS:
        if (args.work / f"{name}_predictions" / f"{name}_raw_mask.tif").is_file():
            settings[name] = setting_scores(args.work, name)
            print(name, json.dumps({k: v for k, v in settings[name].items() if isinstance(v, dict)}), flush=True)
    if not settings:
        sys.exit(f"{args.work}: no setting's raw mask; run benchmarks/quality.py --work {args.work} first")
    print("| setting | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    for name, found in settings.items():
        cells = [f"{found[v]['mean_f1']:.3f} ({found[v]['nuclei']})" for v in VARIANTS]
        label = f"{name} (held out)" if found["held_out"] else name
        print(f"| {label}, {found['true_nuclei']} nuclei | " + " | ".join(cells) + " |")
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "what": "mean F1 and nuclei found on each setting's saved raw mask, the nuclei-stage choices added in turn",
        **({"masks": args.masks} if args.masks else {}),
        "machine": machine(None),
        "variants": {name: list(map(str, choices)) for name, choices in VARIANTS.items()},
        "settings": settings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
