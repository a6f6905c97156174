"""Prediction with real ONNX files on onnxruntime: CellSeg3D's path, tiling rules, packages, CLI, bad input."""

from __future__ import annotations

import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tifffile
import torch
import xarray as xr
import yaml
from monai.inferers import sliding_window_inference
from scipy import ndimage

from wnet_zoo.cli import main
from wnet_zoo.errors import UserError
from wnet_zoo.export.onnx import export_onnx
from wnet_zoo.io.intensity import remap
from wnet_zoo.io.voxels import VoxelSize, read_voxel_size
from wnet_zoo.model.wnet import WNet3D
from wnet_zoo.prediction.foreground import choose_foreground
from wnet_zoo.prediction.metadata import ModelMetadata, read_metadata
from wnet_zoo.prediction.predictor import Predictor, predict
from wnet_zoo.prediction.settings import Tiling
from wnet_zoo.prediction.tiling import TilePlan
from wnet_zoo.segment.half_max import HALF_MAX_SHELL

from closeness import assert_close

TINY_CHANNELS = (4, 8, 16, 32)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, WNet3D]:
    """A tiny WNet3D with fixed random weights and its exported encoder."""
    torch.manual_seed(0)
    model = WNet3D(channels=TINY_CHANNELS).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(model, path, ModelMetadata(num_classes=2, name="tiny"))
    return path, model


@pytest.fixture(scope="session")
def tiny_trained_metadata(tiny, tmp_path_factory) -> Path:
    """The same graph, with a foreground class and a training patch in its metadata."""
    graph = onnx.load(str(tiny[0]))
    metadata = ModelMetadata(num_classes=2, foreground_class=1, train_patch=(16, 32, 24), name="tiny")
    del graph.metadata_props[:]
    for key, value in metadata.to_props().items():
        graph.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp("model") / "tiny_fg.onnx"
    onnx.save(graph, str(path))
    return path


@pytest.fixture(scope="session")
def cpu(tiny) -> Predictor:
    return Predictor(tiny[0], device="cpu", threads=2)


def cellseg3d_path(model: WNet3D, volume: np.ndarray, tile=(64, 64, 64), mode="gaussian") -> np.ndarray:
    """CellSeg3D's inference: torch eager fp32, MONAI sliding windows, the volume remapped to 0..100."""
    with torch.no_grad():
        x = torch.from_numpy(remap(volume))[None, None]
        return sliding_window_inference(x, tile, 1, model.encoder, overlap=0.25, mode=mode)[0].numpy()


@pytest.mark.parametrize("crop", [np.s_[:100, :80, :64], np.s_[:40, :70, :64]], ids=["example", "z-shorter-than-tile"])
def test_default_tiling_equals_cellseg3d_path(tiny, cpu, example, crop):
    volume = np.ascontiguousarray(example[crop])
    reference = cellseg3d_path(tiny[1], volume)
    ours = cpu.probabilities(volume)
    assert cpu.tile == (64, 64, 64) and cpu.tiling == Tiling((64, 64, 64), 0.25, "gaussian", "global")
    assert ours.shape == reference.shape == (2, *volume.shape) and ours.dtype == np.float32
    difference = np.abs(ours - reference)
    assert difference.max() <= 1e-2 and difference.mean() <= 1e-4


def test_constant_blend_equals_monai_constant_mode(tiny, example):
    volume = np.ascontiguousarray(example[:48, :56, :40])
    predictor = Predictor(tiny[0], device="cpu", threads=2, tile=32, blend="constant")
    reference = cellseg3d_path(tiny[1], volume, (32, 32, 32), "constant")
    difference = np.abs(predictor.probabilities(volume) - reference)
    assert difference.max() <= 1e-2 and difference.mean() <= 1e-4


def test_one_tile_over_the_whole_volume_is_one_plain_run(tiny, example):
    volume = np.ascontiguousarray(example[50:70, 10:40, 20:48])  # (20, 30, 28)
    predictor = Predictor(tiny[0], device="cpu", threads=2, tile="24,32,32")
    plan = TilePlan.create(volume.shape, predictor.tile, 0.25)
    assert len(plan.tiles) == 1
    padded = plan.pad_volume(remap(volume))
    session = ort.InferenceSession(str(tiny[0]), providers=["CPUExecutionProvider"])
    plain = session.run(None, {"raw": padded[None, None] / 100})[0][0]  # exported graphs take 0..1
    assert_close(predictor.probabilities(volume), plan.crop(plain), rel=1e-6, what="probabilities")
    # one tile holds the whole volume's minimum and maximum: remapped alone, it is the same input
    per_tile = Predictor(tiny[0], device="cpu", threads=2, tile="24,32,32", norm="tile").probabilities(volume)
    assert_close(per_tile, plan.crop(plain), rel=1e-5, what="probabilities")


def test_a_file_of_the_earlier_0_100_contract_predicts_the_same(tiny, example, tmp_path):
    """Files exported before the graphs took 0..1 say ``minmax_0_100`` and are fed the remap itself."""
    from wnet_zoo.export.encoder import inference_encoder
    from wnet_zoo.export.onnx import _write_graph

    legacy = tmp_path / "legacy.onnx"
    metadata = ModelMetadata(num_classes=2, name="tiny", normalization="minmax_0_100")
    _write_graph(inference_encoder(tiny[1]), torch.rand(1, 1, 16, 16, 16) * 100, legacy, metadata)
    assert read_metadata(legacy).normalization == "minmax_0_100"
    assert read_metadata(tiny[0]).normalization == "minmax_0_1"
    volume = np.ascontiguousarray(example[40:72, 10:50, 20:60])
    old = Predictor(legacy, device="cpu", threads=2, tile=32).probabilities(volume)
    new = Predictor(tiny[0], device="cpu", threads=2, tile=32).probabilities(volume)
    assert_close(old, new, rel=1e-5, what="probabilities")
    mislabelled = tmp_path / "mislabelled.onnx"  # the earlier graph claiming the new contract: fed 100x too little
    _write_graph(inference_encoder(tiny[1]), torch.rand(1, 1, 16, 16, 16) * 100, mislabelled, ModelMetadata(2))
    wrong = Predictor(mislabelled, device="cpu", threads=2, tile=32).probabilities(volume)
    assert np.abs(wrong - new).max() > 1e-2  # so the metadata decides, and the check above can fail


def test_a_model_that_subtracts_its_background_has_short_axes_padded_with_their_edges(example, tmp_path):
    """A constant pad would be taken for background by the opening: a bright band along a thin stack's faces."""
    torch.manual_seed(0)
    path = export_onnx(
        WNet3D(channels=TINY_CHANNELS, input_background=(2, 3, 3)).eval(), tmp_path / "flat.onnx", ModelMetadata(2)
    )
    volume = np.ascontiguousarray(example[50:62, 10:40, 20:48])  # (12, 30, 28): z padded to the tile's 24
    predictor = Predictor(path, device="cpu", threads=2, tile="24,32,32")
    plan = TilePlan.create(volume.shape, predictor.tile, 0.25)
    assert len(plan.tiles) == 1 and predictor.pads_edges
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    edged = session.run(None, {"raw": plan.pad_volume(remap(volume), edge=True)[None, None] / 100})[0][0]
    assert_close(predictor.probabilities(volume), plan.crop(edged), rel=1e-6, what="probabilities")
    constant = session.run(None, {"raw": plan.pad_volume(remap(volume))[None, None] / 100})[0][0]
    assert not np.allclose(plan.crop(constant), plan.crop(edged), atol=1e-2)  # so the check above can fail


CUDNN_SIZE_LIMIT = (  # what onnxruntime-gpu 1.31 said on an H200 running 1331 windows of 64^3 in one batch
    "Non-zero status code returned while running Conv node. Name:'/in_b/in_b.0/Conv' Status Message: CUDNN failure "
    "3000: CUDNN_STATUS_NOT_SUPPORTED ; GPU=0 ; expr=cudnnSetTensorNdDescriptor(tensor_, dataType, ...)"
)


@pytest.mark.parametrize(
    "message", ["[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for 3 tiles", CUDNN_SIZE_LIMIT]
)
def test_batches_tile_norm_and_out_of_memory_fallback(tiny, cpu, example, monkeypatch, message):
    volume = np.ascontiguousarray(example[:48, :48, :56])
    one = Predictor(tiny[0], device="cpu", threads=2, tile=32).probabilities(volume)
    batched = Predictor(tiny[0], device="cpu", threads=2, tile=32, batch=3)
    assert_close(batched.probabilities(volume), one, rel=1e-5, what="probabilities")  # other kernels per batch

    run = batched.engine.run
    sizes: list[int] = []

    def small_memory(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        if len(batch) > 1:
            raise RuntimeError(message)
        return run(batch)

    monkeypatch.setattr(batched.engine, "run", small_memory)
    assert_close(batched.probabilities(volume), one, rel=1e-5, what="probabilities")
    assert batched.batch == 1 and sizes[:5] == [3, 1, 2, 1, 1] and set(sizes[5:]) == {1}

    per_tile = Predictor(tiny[0], device="cpu", threads=2, tile=32, norm="tile").probabilities(volume)
    assert per_tile.shape == one.shape and np.abs(per_tile - one).max() > 1e-3
    np.testing.assert_allclose(per_tile.sum(axis=0), 1.0, atol=1e-5)


def test_predict_api_returns_a_labelled_data_array(tiny, tiny_trained_metadata, small_tiff):
    result = predict(tiny[0], small_tiff, device="cpu", threads=2, tile=32)
    assert isinstance(result, xr.DataArray)
    assert result.dims == ("c", "z", "y", "x") and result.shape == (2, 32, 48, 40)
    assert result.coords["c"].values.tolist() == [0, 1]
    assert result.attrs["provider"] == "CPUExecutionProvider"
    assert result.attrs["tile"] == [32, 32, 32] and result.attrs["overlap"] == 0.25
    assert result.attrs["model"] == "tiny" and result.attrs["foreground_from"] == "intensity"
    assert "voxel_size" not in result.attrs

    trained = Predictor(tiny_trained_metadata, device="cpu", threads=2)
    assert trained.tile == (16, 32, 24)  # the training patch is the default tile
    labelled = predict(trained, tifffile.imread(small_tiff), voxel_size=VoxelSize(2.0, 0.5, 0.5))
    assert labelled.attrs["foreground_class"] == 1 and labelled.attrs["foreground_from"] == "metadata"
    assert labelled.attrs["voxel_size"] == [2.0, 0.5, 0.5]
    assert predict(trained, small_tiff, foreground_class=0).attrs["foreground_class"] == 0


def test_foreground_is_the_brightest_class_without_metadata():
    volume = np.zeros((4, 4, 4), dtype=np.float32)
    volume[:2] = 10.0
    probabilities = np.zeros((3, 4, 4, 4), dtype=np.float32)
    probabilities[2, :2] = 1.0  # the bright half
    probabilities[0, 2:] = 1.0
    metadata = ModelMetadata(num_classes=3)
    assert choose_foreground(probabilities, volume, metadata) == (2, "intensity")
    assert choose_foreground(probabilities, volume, metadata, 0) == (0, "user")
    with pytest.raises(UserError, match="classes 0..2"):
        choose_foreground(probabilities, volume, metadata, 3)


def _package(tmp_path: Path, onnx_path: Path, weights: dict | None = None) -> Path:
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "weights.onnx").write_bytes(onnx_path.read_bytes())
    rdf = {"format_version": "0.5.4", "type": "model", "name": "tiny", "weights": weights or {}}
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    return folder


def test_bioimageio_packages_as_zip_folder_or_rdf(tiny, cpu, tmp_path, example):
    volume = np.ascontiguousarray(example[:32, :40, :40])
    expected = cpu.probabilities(volume)
    folder = _package(tmp_path, tiny[0], {"onnx": {"source": "weights.onnx", "opset_version": 18}})
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in folder.iterdir():
            handle.write(file, file.name)
    for model in (archive, folder, folder / "rdf.yaml"):
        np.testing.assert_array_equal(Predictor(model, device="cpu", threads=2).probabilities(volume), expected)
    other = tmp_path / "other"
    other.mkdir()
    without = _package(other, tiny[0], {"pytorch_state_dict": {"source": "weights.pt"}})
    with pytest.raises(UserError, match="no onnx weights"):
        Predictor(without, device="cpu")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_every_output_with_the_voxel_size(tiny, tmp_path, example, capsys):
    image = tmp_path / "stack.tif"
    crop = example[40:80, 20:68, 30:70].astype(np.uint16)
    tifffile.imwrite(image, crop, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 2.0, "unit": "micron"})
    out = tmp_path / "out"
    args = ["predict", tiny[0], image, "--out", out, "--device", "cpu", "--tile", "32"]
    every = ["--output", "probabilities", "--output", "mask", "--output", "raw-mask", "--output", "instances"]
    code, stdout, err = _run([*args, *every], capsys)
    assert code == 0
    assert "CPUExecutionProvider" in stdout and "stack.tif" in stdout
    assert "stack.tif: nuclei" in err and "measure" in err  # a progress bar over the instance stages
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "stack_instances.tif",
        "stack_labels.csv",
        "stack_mask.tif",
        "stack_probabilities.tif",
        "stack_raw_mask.tif",
    ]
    probabilities = tifffile.imread(out / "stack_probabilities.tif")
    mask = tifffile.imread(out / "stack_mask.tif")
    raw_mask = tifffile.imread(out / "stack_raw_mask.tif")
    labels = tifffile.imread(out / "stack_instances.tif")
    assert probabilities.shape == (2, *crop.shape) and probabilities.dtype == np.float32
    assert mask.shape == labels.shape == crop.shape
    assert mask.dtype == np.uint8 and labels.dtype in (np.uint16, np.uint32)
    expected = predict(tiny[0], image, device="cpu", tile=32)
    np.testing.assert_allclose(probabilities, expected.values, atol=1e-6)
    foreground = expected.attrs["foreground_class"]
    np.testing.assert_array_equal(raw_mask, (expected.values.argmax(axis=0) == foreground).astype(np.uint8))
    np.testing.assert_array_equal(mask, (labels > 0).astype(np.uint8))  # one foreground: the nuclei's
    assert mask.dtype == raw_mask.dtype == np.uint8 and mask.sum() > 0 and not np.array_equal(mask, raw_mask)
    near_mask = ndimage.binary_dilation(raw_mask, np.ones((3, 3, 3), bool), iterations=int(HALF_MAX_SHELL))
    assert not np.any(labels[~near_mask])  # half-max boundaries move out of the mask by at most the shell
    table = (out / "stack_labels.csv").read_text().splitlines()
    assert table[0].startswith("label,voxels,centroid_z,centroid_y,centroid_x,bbox_z_start")
    assert len(table) - 1 == labels.max()
    for name in ("stack_probabilities.tif", "stack_mask.tif", "stack_instances.tif"):
        assert read_voxel_size(out / name) == VoxelSize(2.0, 0.5, 0.5, "µm")

    code, _, _ = _run([*args, "--overwrite", "--voxel-size", "3,1,1", "--output", "mask"], capsys)
    assert code == 0 and read_voxel_size(out / "stack_mask.tif") == VoxelSize(3.0, 1.0, 1.0, "µm")


def test_cli_takes_a_folder_of_four_d_stacks_with_a_channel(tiny, tmp_path, example, capsys):
    folder = tmp_path / "stacks"
    folder.mkdir()
    for name, crop in (("a", example[:24, :40, :32]), ("b", example[30:62, 10:34, 40:80])):
        tifffile.imwrite(folder / f"{name}.tif", np.stack([crop * 0 + crop.mean(), crop]))
    out = tmp_path / "out"
    code, stdout, _ = _run(["predict", tiny[0], folder, "--out", out, "--channel", "1", "--output", "mask"], capsys)
    assert code == 0 and stdout.count("foreground class") == 2
    assert tifffile.imread(out / "a_mask.tif").shape == (24, 40, 32)
    assert tifffile.imread(out / "b_mask.tif").shape == (32, 24, 40)
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.tif", "b_mask.tif"]


def test_existing_outputs_stop_the_run_untouched(tiny, tmp_path, small_tiff, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "crop_mask.tif").write_bytes(b"earlier result")
    code, _, err = _run(["predict", tiny[0], small_tiff, "--out", out, "--device", "cpu"], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) <= 3
    assert sorted(p.name for p in out.iterdir()) == ["crop_mask.tif"]
    assert (out / "crop_mask.tif").read_bytes() == b"earlier result"


def test_ctrl_c_leaves_no_partial_output(tiny, tmp_path, small_tiff, capsys, monkeypatch):
    import wnet_zoo.prediction.files

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wnet_zoo.prediction.files, "instances", interrupted)
    out = tmp_path / "out"
    code, _, _ = _run(["predict", tiny[0], small_tiff, "--out", out, "--device", "cpu", "--tile", "32"], capsys)
    assert code == 130
    assert not out.exists() or list(out.iterdir()) == []  # the mask had been staged: it is gone too


def _bad_inputs(tmp_path: Path, example: np.ndarray, tiny_path: Path) -> dict[str, tuple[list, str]]:
    stack = example[:16, :24, :24]
    files = {
        "flat.tif": stack[0],
        "channels.tif": np.stack([stack, stack]),
        "nan.tif": np.where(stack > stack.mean(), np.nan, stack).astype(np.float32),
        "constant.tif": np.full_like(stack, 7),
    }
    for name, data in files.items():
        tifffile.imwrite(tmp_path / name, data)
    (tmp_path / "text.tif").write_text("not an image")
    (tmp_path / "model.onnx").write_text("not a model")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["raw"], ["probabilities"])],
        "flat",
        [onnx.helper.make_tensor_value_info("raw", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
    )
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "four_d.onnx"))
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, stack)
    return {
        "missing image": ([tiny_path, tmp_path / "absent.tif"], "no such file"),
        "not a TIFF": ([tiny_path, tmp_path / "text.tif"], "not a readable TIFF"),
        "2-D image": ([tiny_path, tmp_path / "flat.tif"], "3-D"),
        "4-D without --channel": ([tiny_path, tmp_path / "channels.tif"], "--channel"),
        "NaN voxels": ([tiny_path, tmp_path / "nan.tif"], "NaN"),
        "constant image": ([tiny_path, tmp_path / "constant.tif"], "constant"),
        "bad channel among good": ([tiny_path, good, tmp_path / "nan.tif"], "NaN"),
        "model not ONNX": ([tmp_path / "model.onnx", good], "not an ONNX model"),
        "model a TIFF": ([good, good], "not an ONNX model"),
        "model input 4-D": ([tmp_path / "four_d.onnx", good], "not 5-D"),
        "missing model": ([tmp_path / "absent.onnx", good], "no such model"),
        "tile not a multiple of 8": ([tiny_path, good, "--tile", "30"], "multiple of 8"),
    }


def test_bad_input_exits_2_with_a_short_message_and_no_output(tiny, tmp_path, example, capsys):
    for case, (args, message) in _bad_inputs(tmp_path, example, tiny[0]).items():
        out = tmp_path / "out"
        code, _, err = _run(["predict", *args, "--out", out, "--device", "cpu"], capsys)
        assert code == 2, case
        lines = err.strip().splitlines()
        assert lines[0].startswith("Error:") and message in err and len(lines) <= 3, (case, err)
        assert not out.exists(), case


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_missing_runtime_and_missing_gpu_say_what_to_install(tiny, tmp_path, small_tiff, capsys, monkeypatch):
    out = tmp_path / "out"
    code, _, err = _run(["predict", tiny[0], small_tiff, "--out", out, "--device", "cuda"], capsys)
    assert code == 2 and "wnet-zoo[gpu]" in err and len(err.strip().splitlines()) == 1

    # onnxruntime-gpu offers CUDA everywhere and falls back to the CPU where it cannot start it
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr("wnet_zoo.prediction.runtime._loadable", lambda *names: False)
    code, _, err = _run(["predict", tiny[0], small_tiff, "--out", out, "--device", "cuda"], capsys)
    assert code == 2 and "no NVIDIA GPU driver" in err and len(err.strip().splitlines()) == 1
    real_session = ort.InferenceSession

    def printing_session(*args, **kwargs):  # onnxruntime-gpu print()s its fallback from a provider that failed
        print("*************** EP Error ***************\nFalling back to ['CPUExecutionProvider'] and retrying.")
        return real_session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", printing_session)
    code, stdout, _ = _run(["predict", tiny[0], small_tiff, "--out", out, "--tile", "32"], capsys)
    assert code == 0 and "CPUExecutionProvider" in stdout  # auto without a GPU
    assert "EP Error" not in stdout and "Falling back" not in stdout

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = _run(["predict", tiny[0], small_tiff, "--out", tmp_path / "other"], capsys)
    assert code == 2 and 'pip install "wnet-zoo[cpu]"' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("outputs", "imported"), [([], ["scipy"]), (["--output", "raw-mask"], [])])
def test_the_predict_command_runs_without_torch(tiny_onnx: Path, small_tiff: Path, tmp_path: Path, outputs, imported):
    """``wnet-zoo predict`` needs ONNX Runtime only: torch (1.5 s to import) stays out of its process, and scipy
    (0.3 s) too when no instances are asked for."""
    script = (
        "import sys; from wnet_zoo.cli import main; "
        f"code = main(['predict', {str(tiny_onnx)!r}, {str(small_tiff)!r}, '--out', {str(tmp_path / 'out')!r}, "
        f"'--device', 'cpu', '--threads', '2', *{outputs!r}]); "
        "print(code, sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == f"0 {imported}"
    written = "instances" if not outputs else "raw_mask"
    assert (tmp_path / "out" / f"{small_tiff.stem}_{written}.tif").is_file()


VOLUME = ["batch", 1, "z", "y", "x"]


def _graph_file(
    path: Path,
    nodes: list,
    raw: tuple = (onnx.TensorProto.FLOAT, VOLUME),
    out: tuple = (onnx.TensorProto.FLOAT, None),
    constants: dict[str, np.ndarray] | None = None,
    props: dict[str, str] | None = None,
) -> Path:
    """A hand-made ONNX graph from ``raw`` to ``probabilities`` (element type and declared shape of each; a
    shape of None leaves it to be found by running), with initializers ``constants`` and metadata ``props``."""
    graph = onnx.helper.make_graph(
        nodes,
        path.stem,
        [onnx.helper.make_tensor_value_info("raw", *raw)],
        [onnx.helper.make_tensor_value_info("probabilities", *out)],
        initializer=[onnx.numpy_helper.from_array(value, name) for name, value in (constants or {}).items()],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    for key, value in (props or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def _conv(path: Path, inputs: int = 1, pad: int = 1, scale: float = 0.1, **kwargs) -> Path:
    """A 3-D convolution with two output channels (``scale``: its weights' size), optionally followed by a softmax."""
    kernel = np.random.default_rng(0).uniform(-scale, scale, (2, inputs, 3, 3, 3)).astype(np.float32)
    softmax = kwargs.pop("softmax", False)
    nodes = [
        onnx.helper.make_node("Conv", ["raw", "kernel"], ["logits" if softmax else "probabilities"], pads=[pad] * 6)
    ]
    if softmax:
        nodes.append(onnx.helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    return _graph_file(path, nodes, constants={"kernel": kernel}, **kwargs)


OURS = ModelMetadata(num_classes=2, name="hand-made").to_props()
IDENTITY = [onnx.helper.make_node("Identity", ["raw"], ["probabilities"])]


def _other_networks(folder: Path) -> dict[str, tuple[Path, str]]:
    """Valid ONNX graphs of other networks, and what the one-line error must say about each."""
    int64 = onnx.TensorProto.INT64
    channel_mean = [onnx.helper.make_node("ReduceMean", ["raw", "axes"], ["probabilities"], keepdims=0)]
    return {
        "two input channels": (
            _conv(folder / "two_in.onnx", inputs=2, raw=(1, ["batch", 2, "z", "y", "x"])),
            "2 input channels, not 1",
        ),
        "two input channels, undeclared": (
            _conv(folder / "two_in_dyn.onnx", inputs=2, raw=(1, ["batch", "c", "z", "y", "x"])),
            "fails on a (1, 1, 32, 32, 32) float32 tile",
        ),
        "no padding": (_conv(folder / "no_pad.onnx", pad=0), "into (1, 2, 30, 30, 30)"),
        "int64 input": (
            _graph_file(folder / "int.onnx", IDENTITY, (int64, VOLUME), (int64, None)),
            "int64, not float32",
        ),
        "identity": (_graph_file(folder / "identity.onnx", IDENTITY), "1 channel"),
        "identity, declared": (_graph_file(folder / "identity_declared.onnx", IDENTITY, out=(1, VOLUME)), "1 channel"),
        "logits": (_conv(folder / "logits.onnx", scale=10.0), "not class probabilities"),
        "4-D output": (
            _graph_file(folder / "flat_out.onnx", channel_mean, constants={"axes": np.array([1])}),
            "into (1, 32, 32, 32)",
        ),
        "wnet-zoo metadata, no padding": (_conv(folder / "ours_no_pad.onnx", pad=0, props=OURS), "(1, 2, 30, 30, 30)"),
    }


def test_other_networks_are_refused_in_one_line_before_any_output(tmp_path, small_tiff, capsys):
    for case, (model, message) in _other_networks(tmp_path).items():
        out = tmp_path / "out"
        code, _, err = _run(["predict", model, small_tiff, "--out", out, "--device", "cpu", "--tile", "32"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"Error: {model}: "), (case, err)
        assert message in lines[0], (case, err)
        assert ("no wnet-zoo metadata" in lines[0]) == ("wnet-zoo metadata" not in case), (case, err)
        assert not out.exists(), case


def test_a_foreign_model_of_class_probabilities_runs_with_a_warning(tmp_path, small_tiff, capsys):
    model = _conv(tmp_path / "softmax.onnx", softmax=True)
    out = tmp_path / "out"
    code, stdout, err = _run(["predict", model, small_tiff, "--out", out, "--device", "cpu", "--tile", "32"], capsys)
    notices = [line for line in err.splitlines() if "wnet-zoo metadata" in line]
    assert code == 0 and len(notices) == 1 and notices[0].startswith(f"{model}: no wnet-zoo metadata"), err
    assert (out / "crop_instances.tif").is_file()
    probabilities = Predictor(model, device="cpu", threads=2, tile=32).probabilities(tifffile.imread(small_tiff))
    assert probabilities.shape == (2, 32, 48, 40)
    capsys.readouterr()  # its warning again

    ours = _conv(tmp_path / "ours.onnx", softmax=True, props=OURS)
    code, _, err = _run(["predict", ours, small_tiff, "--out", tmp_path / "o2", "--device", "cpu"], capsys)
    assert code == 0 and "metadata" not in err


def test_checkpoints_and_run_folders_say_to_export_first(tmp_path, small_tiff, capsys):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1}, run / "last.pt")
    (run / "config.yaml").write_text("epochs: 1\n")
    renamed = tmp_path / "weights.bin"  # a torch file by its content: a zip holding data.pkl
    renamed.write_bytes((run / "last.pt").read_bytes())
    torch.save({"w": torch.zeros(2)}, tmp_path / "cellseg3d.pth")
    scripted = tmp_path / "wnet3d.torchscript.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, its files still made
        torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(scripted))
    checkpoint = "a training checkpoint, not an exported model; export it first: wnet-zoo export"
    cases = {
        run / "last.pt": f"{checkpoint} {run / 'last.pt'} --out",
        run: f"a training run folder, not an exported model; export it first: wnet-zoo export {run} --out",
        renamed: f"{checkpoint} {renamed} --out",
        tmp_path / "cellseg3d.pth": "export it first: wnet-zoo export",
        scripted: "a TorchScript model, not ONNX",
    }
    for model, message in cases.items():
        out = tmp_path / "out"
        code, _, err = _run(["predict", model, small_tiff, "--out", out, "--device", "cpu"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"Error: {model}: "), (model, err)
        assert message in lines[0], (model, err)
        assert not out.exists()


def test_every_error_about_a_zipped_package_names_the_zip(tiny, tmp_path, small_tiff, capsys):
    def zipped(name: str, files: dict[str, bytes]) -> Path:
        archive = tmp_path / name
        with zipfile.ZipFile(archive, "w") as handle:
            for member, data in files.items():
                handle.writestr(member, data)
        return archive

    rdf = yaml.safe_dump({"type": "model", "weights": {"onnx": {"source": "weights.onnx"}}}).encode()
    identity = _graph_file(tmp_path / "identity.onnx", IDENTITY).read_bytes()
    unknown_op = _graph_file(tmp_path / "unknown.onnx", [onnx.helper.make_node("NoSuchOp", ["raw"], ["probabilities"])])
    good = zipped("good.zip", {"rdf.yaml": rdf, "weights.onnx": tiny[0].read_bytes()})
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[:-100])
    cases = {
        zipped("text.zip", {"rdf.yaml": rdf, "weights.onnx": b"not a model"}): "(weights.onnx): not an ONNX model",
        zipped("yaml.zip", {"rdf.yaml": b"weights: [unclosed", "weights.onnx": b""}): "(rdf.yaml): not a readable",
        zipped("empty.zip", {"rdf.yaml": rdf}): "weights.onnx are missing",
        zipped("identity.zip", {"rdf.yaml": rdf, "weights.onnx": identity}): "(weights.onnx): no wnet-zoo metadata",
        zipped("op.zip", {"rdf.yaml": rdf, "weights.onnx": unknown_op.read_bytes()}): "NoSuchOp",
        truncated: "not a readable zip",
    }
    for archive, message in cases.items():
        out = tmp_path / "out"
        code, _, err = _run(["predict", archive, small_tiff, "--out", out, "--device", "cpu"], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith(f"Error: {archive}"), (archive, err)
        assert message in lines[0] and "wnet-zoo-" not in err, (archive, err)  # not the temporary folder
        assert not out.exists()


def test_onnxruntime_messages_keep_their_point_and_whole_words(tmp_path):
    op = "NoSuchOperatorWithAVeryLongNameThatFillsTheMessage" * 2
    model = _graph_file(
        tmp_path / ("long_name_" * 8 + ".onnx"), [onnx.helper.make_node(op, ["raw"], ["probabilities"])]
    )
    with pytest.raises(UserError) as caught:
        Predictor(model, device="cpu")
    message = str(caught.value)
    assert f"No Op registered for {op}" in message and "Load model from" not in message, message
    assert len(message.splitlines()) == 1

    from wnet_zoo.prediction.runtime import short_message

    words = " ".join(f"word{i}" for i in range(100))
    cut = short_message(RuntimeError(f"[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : {words}\nsecond line"))
    assert cut.endswith("...") and cut.startswith("word0 word1") and len(cut) <= 203
    assert cut[:-3].rstrip() in words and words.startswith(cut[:-3].rstrip() + " ")  # whole words only
