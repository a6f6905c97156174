"""Predicting files: ``--threads`` reaches the nucleus stages, in memory and streamed, and changes no label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

import wnet_zoo.prediction.files as files
import wnet_zoo.prediction.stream.blocks as blocks
from wnet_zoo.prediction.stream.options import StreamOptions


def test_threads_reach_the_nucleus_stages_and_change_no_label(tiny_onnx, example, tmp_path, monkeypatch):
    image = tmp_path / "crop.tif"
    tifffile.imwrite(image, example[20:84, 8:72, 16:80].astype(np.uint16))
    seen: list[tuple[str, int]] = []

    def spying(where: str, function):
        def spy(*args, **kwargs):
            seen.append((where, kwargs["threads"]))
            return function(*args, **kwargs)

        return spy

    monkeypatch.setattr(files, "instances", spying("memory", files.instances))
    monkeypatch.setattr(blocks, "nuclei_labels", spying("stream", blocks.nuclei_labels))
    found = {}
    for threads in (1, 2):
        for stream in (False, True):
            out = tmp_path / f"out_{threads}_{stream}"
            files.predict_files(
                tiny_onnx,
                [image],
                out,
                device="cpu",
                tile=32,
                threads=threads,
                outputs=("instances",),
                stream=stream,
                stream_options=StreamOptions(block=32, label_block=32, chunk=16, instance_halo=16),
                report=lambda line: None,
            )
            (labels,) = Path(out).glob("*_instances.tif")
            found[threads, stream] = tifffile.imread(labels)
    assert ("memory", 1) in seen and ("memory", 2) in seen and ("stream", 1) in seen and ("stream", 2) in seen
    assert found[1, False].max() > 20
    for key, labels in found.items():
        assert np.array_equal(labels, found[1, key[1]]), key
