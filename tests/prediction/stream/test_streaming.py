"""Streaming prediction on real TIFF and zarr files: equality with in-memory prediction, resume, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from wnet_zoo.cli import main
from wnet_zoo.errors import UserError
from wnet_zoo.io.voxels import read_voxel_size
from wnet_zoo.prediction.files import predict_files
from wnet_zoo.prediction.stream import blocks
from wnet_zoo.prediction.stream.options import DEFAULT_INSTANCE_HALO, StreamOptions
from wnet_zoo.prediction.stream.streaming import work_folder
from wnet_zoo.segment.options import NucleiOptions

from tiffs import truncated_tiffs

SMALL = StreamOptions(block=32, label_block=32, chunk=16, instance_halo=DEFAULT_INSTANCE_HALO)
ALL = ("probabilities", "mask", "raw_mask", "instances")
SETTINGS = {"device": "cpu", "threads": 2, "tile": 16}


@pytest.fixture(scope="module")
def volume(example) -> np.ndarray:
    """A (40, 72, 60) uint16 crop: 2 x 3 x 2 blocks of 32, the last ones partial."""
    return np.ascontiguousarray(example[30:70, 8:80, 20:80]).astype(np.uint16)


def export_bundled(path: Path, **transform: object) -> Path:
    """The bundled pretrained weights (with ``transform``) as an ONNX file: nuclei of a real nucleus's size. Streamed
    labels equal in-memory ones for nuclei (and clumps) within the instance halo; random weights call one labyrinth
    through the whole volume foreground, which no halo holds."""
    from wnet_zoo.export.onnx import export_onnx
    from wnet_zoo.model.checkpoints import load_weights
    from wnet_zoo.model.wnet import WNet3D
    from wnet_zoo.prediction.metadata import ModelMetadata

    weights = load_weights("bundled")
    model = WNet3D(**{**weights.architecture, **transform})
    model.load_state_dict(model.state_dict() | weights.state_dict)  # the transform's buffers are the model's own
    return export_onnx(model.eval(), path, ModelMetadata(num_classes=2))


@pytest.fixture(scope="module")
def nuclei_onnx(tmp_path_factory) -> Path:
    return export_bundled(tmp_path_factory.mktemp("bundled") / "bundled.onnx")


@pytest.fixture(scope="module")
def in_memory(nuclei_onnx, volume, tmp_path_factory) -> dict[str, object]:
    """The in-memory results of the crop, the reference for every streamed run."""
    folder = tmp_path_factory.mktemp("memory")
    tifffile.imwrite(
        folder / "crop.tif", volume, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 1.0, "unit": "micron"}
    )
    predict_files(
        nuclei_onnx, [folder / "crop.tif"], folder / "out", outputs=ALL, stream=False, report=_quiet, **SETTINGS
    )
    return _read(folder / "out", "crop", "tif")


def _quiet(line: str) -> None:
    del line


def _read(out: Path, stem: str, fmt: str) -> dict[str, object]:
    def load(name: str) -> np.ndarray:
        path = out / f"{stem}_{name}.{fmt}"
        if fmt == "tif":
            return tifffile.imread(path)
        node = zarr.open(str(path), mode="r")
        return node[...] if isinstance(node, zarr.Array) else node["0"][...]

    table = pd.read_csv(out / f"{stem}_labels.csv")
    return {name: load(name) for name in ALL} | {"table": table}


def _assert_same(streamed: dict[str, object], reference: dict[str, object]) -> None:
    np.testing.assert_array_equal(streamed["probabilities"], reference["probabilities"])
    np.testing.assert_array_equal(streamed["mask"], reference["mask"])
    np.testing.assert_array_equal(streamed["raw_mask"], reference["raw_mask"])
    np.testing.assert_array_equal(streamed["mask"], streamed["instances"] > 0)  # one foreground, also in blocks
    ours, theirs = streamed["instances"], reference["instances"]
    assert ours.dtype == theirs.dtype and ours.max() == theirs.max() > 20
    pairs = np.unique(np.stack([ours.ravel(), theirs.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(ours)) == len(np.unique(theirs))  # the same nuclei, renumbered
    columns = ["voxels", "centroid_z", "centroid_y", "centroid_x", "mean_intensity"]
    ordered = [t.sort_values(columns)[columns].to_numpy() for t in (streamed["table"], reference["table"])]
    np.testing.assert_allclose(*ordered, rtol=1e-5)


def test_streamed_tiff_equals_in_memory(nuclei_onnx, volume, in_memory, tmp_path):
    tifffile.imwrite(
        tmp_path / "crop.tif", volume, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 1.0, "unit": "micron"}
    )
    predict_files(
        nuclei_onnx,
        [tmp_path / "crop.tif"],
        tmp_path / "out",
        outputs=ALL,
        stream=True,
        stream_options=SMALL,
        report=_quiet,
        **SETTINGS,
    )
    streamed = _read(tmp_path / "out", "crop", "tif")
    _assert_same(streamed, in_memory)
    assert read_voxel_size(tmp_path / "out" / "crop_instances.tif")[:3] == pytest.approx((1.0, 0.5, 0.5))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "crop_instances.tif",
        "crop_labels.csv",
        "crop_mask.tif",
        "crop_probabilities.tif",
        "crop_raw_mask.tif",
    ]


@pytest.mark.slow
def test_zarr_in_zarr_out_and_compressed_tiff(nuclei_onnx, volume, in_memory, tmp_path):
    zarr.create_array(str(tmp_path / "crop.zarr"), data=volume, chunks=(16, 20, 24))
    tifffile.imwrite(tmp_path / "packed.tif", volume, compression="zlib", rowsperstrip=8)
    results = predict_files(
        nuclei_onnx,
        [tmp_path / "crop.zarr", tmp_path / "packed.tif"],
        tmp_path / "out",
        outputs=ALL,
        stream_options=SMALL,
        voxel_size="1,0.5,0.5",
        report=_quiet,
        **SETTINGS,
    )
    assert [r.paths["mask"].name for r in results] == ["crop_mask.zarr", "packed_mask.tif"]
    _assert_same(_read(tmp_path / "out", "crop", "zarr"), in_memory)
    _assert_same(_read(tmp_path / "out", "packed", "tif"), in_memory)
    store = zarr.open(str(tmp_path / "out" / "crop_probabilities.zarr"), mode="r")
    assert store["0"].chunks == (2, 16, 16, 16)
    scale = store.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 1.0, 0.5, 0.5]


def test_ome_zarr_level_and_version_carried_over(nuclei_onnx, volume, tmp_path):
    group = zarr.open_group(str(tmp_path / "image.ome.zarr"), mode="w", zarr_format=3)
    group.create_array("0", data=volume, chunks=(16, 32, 32))
    group.create_array("1", data=volume[:, ::2, ::2], chunks=(16, 32, 32))
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.4 * 2**level, 0.4 * 2**level]}],
        }
        for level in (0, 1)
    ]
    axes = [{"name": name, "type": "space", "unit": "micrometer"} for name in "zyx"]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    (result,) = predict_files(
        nuclei_onnx,
        [tmp_path / "image.ome.zarr"],
        tmp_path / "out",
        outputs=["mask"],
        level=1,
        stream_options=SMALL,
        report=_quiet,
        **SETTINGS,
    )
    written = zarr.open(str(result.paths["mask"]), mode="r")
    assert written.metadata.zarr_format == 3 and written["0"].shape == (40, 36, 30)
    ome = written.attrs["ome"]
    assert ome["version"] == "0.5"
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 0.8, 0.8]


@pytest.mark.slow
def test_resume_skips_finished_blocks_and_gives_the_same_result(nuclei_onnx, volume, in_memory, tmp_path, monkeypatch):
    tifffile.imwrite(
        tmp_path / "crop.tif", volume, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 1.0, "unit": "micron"}
    )
    args = ([tmp_path / "crop.tif"], tmp_path / "out")
    options = {"outputs": ALL, "fmt": "zarr", "stream_options": SMALL, "report": _quiet, **SETTINGS}
    calls: dict[str, int] = {}
    real = dict(blocks._PHASE_FUNCTIONS)

    def counted(phase: str, fail_at: int | None):
        def work(*args):
            calls[phase] = calls.get(phase, 0) + 1
            if calls[phase] == fail_at:
                raise KeyboardInterrupt
            return real[phase](*args)

        return work

    for phase in real:
        monkeypatch.setitem(blocks._PHASE_FUNCTIONS, phase, counted(phase, 3 if phase == "label" else None))
    with pytest.raises(KeyboardInterrupt):
        predict_files(nuclei_onnx, *args, **options)
    work = work_folder(tmp_path / "out", "crop")
    assert calls == {"statistics": 12, "probabilities": 12, "label": 3}
    assert len(list((work / "done" / "label").iterdir())) == 2 and not (tmp_path / "out" / "crop_mask.zarr").exists()

    with pytest.raises(UserError, match="pass resume=True to continue"):
        predict_files(nuclei_onnx, *args, **options)
    with pytest.raises(UserError, match="other settings"):
        predict_files(nuclei_onnx, *args, resume=True, **{**options, "nuclei": NucleiOptions(min_size=3)})

    calls.clear()
    for phase in real:
        monkeypatch.setitem(blocks._PHASE_FUNCTIONS, phase, counted(phase, None))
    predict_files(nuclei_onnx, *args, resume=True, **options)
    assert calls == {"label": 10, "pairs": 12, "relabel": 12}  # 2 of 12 label blocks were done, and all before
    assert not work.exists()
    _assert_same(_read(tmp_path / "out", "crop", "zarr"), in_memory)

    lines: list[str] = []
    assert predict_files(nuclei_onnx, *args, resume=True, **{**options, "report": lines.append}) == []
    assert lines == ["crop.tif: results complete, nothing to resume"]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["relabel", "publish"])
def test_resume_after_relabelling_or_publishing_began(nuclei_onnx, volume, in_memory, tmp_path, monkeypatch, where):
    tifffile.imwrite(
        tmp_path / "crop.tif", volume, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 1.0, "unit": "micron"}
    )
    args = ([tmp_path / "crop.tif"], tmp_path / "out")
    options = {"outputs": ALL, "fmt": "zarr", "stream_options": SMALL, "report": _quiet, **SETTINGS}
    with monkeypatch.context() as patch:
        if where == "relabel":
            real = blocks._PHASE_FUNCTIONS["relabel"]
            done: list[int] = []

            def relabel(job, index, lookup):
                if len(done) == 5:
                    raise KeyboardInterrupt
                done.append(index)
                return real(job, index, lookup)

            patch.setitem(blocks._PHASE_FUNCTIONS, "relabel", relabel)
        else:
            real_replace = os.replace
            moved: list[str] = []

            def replace(source, destination):
                if str(source).endswith(".zarr"):
                    if len(moved) == 1:
                        raise KeyboardInterrupt
                    moved.append(str(destination))
                real_replace(source, destination)

            patch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            predict_files(nuclei_onnx, *args, **options)
    assert work_folder(tmp_path / "out", "crop").exists()
    predict_files(nuclei_onnx, *args, resume=True, **options)
    _assert_same(_read(tmp_path / "out", "crop", "zarr"), in_memory)


def _cli(args: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_bad_streaming_input_exits_2_and_writes_nothing(tiny_onnx, volume, tmp_path, capsys):
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("raw", data=volume, chunks=(16, 32, 32))
    zarr.create_array(str(tmp_path / "plain.zarr"), data=volume, chunks=(16, 32, 32))
    zarr.create_array(str(tmp_path / "flat.zarr"), data=volume[0], chunks=(32, 32))
    (tmp_path / "empty.zarr").mkdir()
    zarr.create_array(
        str(tmp_path / "nan.zarr"), data=np.where(volume > volume.mean(), np.nan, volume), chunks=(16, 16, 16)
    )
    cases = {
        "group, not an image": ([tmp_path / "group.zarr"], "not an OME-Zarr image"),
        "folder, not a store": ([tmp_path / "empty.zarr"], "not a zarr array"),
        "2-D array": ([tmp_path / "flat.zarr"], "3-D"),
        "NaN voxels": ([tmp_path / "nan.zarr", "--block", "64"], "NaN"),
        "level of a plain array": ([tmp_path / "plain.zarr", "--level", "2"], "one level"),
        "no scheduler there": ([tmp_path / "plain.zarr", "--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler"),
        "bad local cluster": ([tmp_path / "plain.zarr", "--scheduler", "local:none"], "local:N"),
        "block not chunked": ([tmp_path / "plain.zarr", "--block", "100"], "multiple of the chunk"),
        "zarr without streaming": ([tmp_path / "plain.zarr", "--no-stream"], "need streaming"),
    }
    for case, (args, message) in cases.items():
        out = tmp_path / "out"
        code, err = _cli(["predict", tiny_onnx, *args, "--out", out, "--device", "cpu", "--tile", "16"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and lines[0].startswith("Error:") and message in err and len(lines) <= 3, (case, err)
        assert not out.exists(), case


def test_existing_store_needs_overwrite_or_resume(tiny_onnx, volume, tmp_path, capsys):
    zarr.create_array(str(tmp_path / "plain.zarr"), data=volume, chunks=(16, 32, 32))
    out = tmp_path / "out"
    args = [
        "predict",
        tiny_onnx,
        tmp_path / "plain.zarr",
        "--out",
        out,
        "--device",
        "cpu",
        "--tile",
        "16",
        "--block",
        "64",
    ]
    assert _cli([*args, "--output", "mask"], capsys)[0] == 0
    before = zarr.open(str(out / "plain_mask.zarr"), mode="r")[...]
    code, err = _cli([*args, "--output", "mask"], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    np.testing.assert_array_equal(zarr.open(str(out / "plain_mask.zarr"), mode="r")[...], before)
    assert _cli([*args, "--output", "mask", "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["plain_mask.zarr"]


def test_blocks_of_thin_volumes_grow_to_the_same_memory():
    from wnet_zoo.prediction.stream.streaming import fit_block

    cube = (128 + 2 * 24) ** 3
    for shape in [(64, 512, 512), (256, 1024, 1024), (10, 20000, 20000), (2000, 100, 3000)]:
        block = fit_block(shape, 128, 64, 24)
        assert all(b % 64 == 0 and b >= 64 for b in block)
        extended = np.prod([min(b + 48, s) for b, s in zip(block, shape, strict=True)])
        assert 0.6 * cube <= extended <= 1.4 * cube, (shape, block)
    assert fit_block((1024, 1024, 1024), 128, 64, 24) == (128, 128, 128)
    assert fit_block((40, 72, 60), 32, 16, 16) == (32, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize("transform", [{"input_log": 2.0}, {"input_log": 2.0, "input_background": (2, 3, 3)}])
def test_a_transforming_model_has_its_half_max_boundaries_read_the_image_less_its_background(
    volume, tmp_path, transform
):
    """In memory and streamed alike, the half-max boundaries read the image less its background where the model
    subtracts one (which blocks read beyond their halo for), in linear intensity though the model compresses its
    input."""
    from wnet_zoo.io.intensity import boundary_view
    from wnet_zoo.segment.nuclei import instances

    model = export_bundled(tmp_path / "transform.onnx", **transform)
    tifffile.imwrite(tmp_path / "crop.tif", volume)
    tifffile.imwrite(tmp_path / "thin.tif", volume[:12])  # thinner than the tile: padded, with edges if flattening
    results = {}
    for stream in (False, True):
        out = tmp_path / f"out{stream}"
        options = {"stream_options": SMALL} if stream else {}
        images = [tmp_path / "crop.tif", tmp_path / "thin.tif"]
        predict_files(model, images, out, outputs=ALL, stream=stream, report=_quiet, **options, **SETTINGS)
        results[stream] = _read(out, "crop", "tif")
        results["thin", stream] = _read(out, "thin", "tif")
    _assert_same(results[True], results[False])
    _assert_same(results["thin", True], results["thin", False])
    probabilities, mask = results[False]["probabilities"], results[False]["raw_mask"] > 0
    foreground = probabilities[:, mask].mean(axis=1).argmax()
    seen = boundary_view(volume, transform.get("input_background"))
    found = instances(probabilities[foreground], volume, mask=mask, boundary_intensity=seen).labels
    np.testing.assert_array_equal(results[False]["instances"] > 0, found > 0)
    if "input_background" in transform:  # the subtraction moves boundaries that the plain image would not
        raw = instances(probabilities[foreground], volume, mask=mask).labels
        assert not np.array_equal(found > 0, raw > 0)


def test_truncated_or_tiny_tiffs_are_refused_by_predict_in_one_line(tiny_onnx, tmp_path, capsys, caplog):
    tifffile.imwrite(tmp_path / "tiny.tif", np.random.default_rng(0).random((2, 7, 9), dtype=np.float32))
    cases = {**truncated_tiffs(tmp_path), "tiny": tmp_path / "tiny.tif"}
    for case, image in cases.items():
        for stream in ("--stream", "--no-stream"):
            caplog.clear()
            out = tmp_path / "out"
            code, err = _cli(["predict", tiny_onnx, image, "--out", out, "--device", "cpu", stream], capsys)
            message = "too small" if case == "tiny" else ": truncated: "
            assert code == 2 and err.startswith("Error:") and message in err, (case, stream, err)
            assert len(err.strip().splitlines()) == 1, (case, stream, err)
            assert not [r for r in caplog.records if r.name.startswith("tifffile")], (case, stream)
            assert not out.exists(), (case, stream)


def test_a_job_carries_the_callers_naming_to_the_process_that_runs_its_blocks(tmp_path, monkeypatch):
    """A Dask worker never enters the CLI's naming: the job brings it, so a block's error names the flag."""
    import pickle

    from wnet_zoo.cli.naming import CliNaming
    from wnet_zoo.errors import naming, setting
    from wnet_zoo.io.sources import SourceSpec
    from wnet_zoo.prediction.stream.jobs import Job

    def refuse(job, index):
        raise UserError(f"{setting('device', 'cuda')}: no GPU here")

    monkeypatch.setitem(blocks._PHASE_FUNCTIONS, "statistics", refuse)
    shape = (8, 8, 8)
    with naming(CliNaming()):
        job = Job(SourceSpec(tmp_path / "a.tif"), tmp_path / "m.onnx", tmp_path, shape, shape, shape, {}, ("mask",))
    shipped = pickle.loads(pickle.dumps(job))  # as Dask sends it, run outside the CLI's naming
    with pytest.raises(UserError, match=r"^--device cuda: no GPU here$"):
        blocks.run("statistics", shipped, 0)
    with pytest.raises(UserError, match=r"^device='cuda': no GPU here$"):
        blocks.run(
            "statistics", Job(SourceSpec(tmp_path / "a.tif"), tmp_path, tmp_path, shape, shape, shape, {}, ()), 0
        )
