import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from wnet_zoo.errors import UserError
from wnet_zoo.io.intensity import remap
from wnet_zoo.io.volumes import collect_images, read_volume
from wnet_zoo.training.sampler import PatchSampler, resolve_patch
from wnet_zoo.triples import parse_triple

from tiffs import truncated_tiffs


def test_read_any_dtype_and_remap_exactly(tmp_path: Path, example: np.ndarray):
    for dtype in (np.uint8, np.uint16, np.int32, np.float64):
        path = tmp_path / f"v_{np.dtype(dtype).name}.tif"
        tifffile.imwrite(path, (example[:16, :16, :16] / 16).astype(dtype))
        volume = read_volume(path)
        assert volume.dtype == np.float32 and volume.shape == (16, 16, 16)
    v = np.array([[[2.0, 4.0], [6.0, 10.0]]], dtype=np.float32)
    np.testing.assert_array_equal(remap(v), (v - 2) / 8 * 100)
    r = remap(example)
    assert r.min() == 0 and r.max() == 100


def test_channel_selection(tmp_path: Path):
    stack = np.stack([np.random.rand(8, 8, 8), np.random.rand(8, 8, 8) + 5]).astype(np.float32)
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, stack)
    assert read_volume(path, channel=1).min() >= 5
    with pytest.raises(UserError, match="choose one with channel=N$"):
        read_volume(path)
    with pytest.raises(UserError, match="out of range"):
        read_volume(path, channel=2)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.random.rand(16, 16).astype(np.float32), "3-D"),
        (np.random.rand(2, 2, 4, 8, 8).astype(np.float32), "5-D"),
        (np.full((8, 8, 8), np.nan, dtype=np.float32), "NaN"),
        (np.full((8, 8, 8), 7, dtype=np.uint16), "constant"),
    ],
)
def test_bad_volumes(tmp_path: Path, data, message):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    with pytest.raises(UserError, match=message):
        read_volume(path)


def test_not_a_tiff_and_folders(tmp_path: Path):
    (tmp_path / "notes.tif").write_text("hello")
    with pytest.raises(UserError, match="not a readable TIFF"):
        read_volume(tmp_path / "notes.tif")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no .tif"):
        collect_images([empty])
    tifffile.imwrite(tmp_path / "b.tiff", np.zeros((2, 2, 2), np.uint8))
    assert [p.name for p in collect_images([tmp_path])] == ["b.tiff", "notes.tif"]


def test_patch_resolution():
    assert parse_triple("32,64,48", "patch") == (32, 64, 48)
    assert parse_triple("40", "patch") == (40, 40, 40)
    assert resolve_patch(None, [(124, 86, 94), (70, 200, 200)]) == (64, 64, 64)
    assert resolve_patch(None, [(30, 86, 50)]) == (24, 64, 48)
    with pytest.raises(UserError, match="multiple of 8"):
        resolve_patch((30, 32, 32), [(64, 64, 64)])
    with pytest.raises(UserError, match="larger than the smallest volume"):
        resolve_patch((64, 64, 64), [(32, 128, 128)])
    with pytest.raises(UserError):
        parse_triple("a,b", "patch")


def test_sampler_is_seeded_and_augments(example: np.ndarray):
    volumes = [remap(example)]
    sampler = PatchSampler(volumes, (32, 48, 48), samples_per_epoch=5, batch=2, seed=3)
    first = list(sampler.epoch(0))
    assert sampler.steps_per_epoch() == 3 == len(first)
    assert [b.shape for b in first] == [(2, 1, 32, 48, 48)] * 2 + [(1, 1, 32, 48, 48)]
    again = list(PatchSampler(volumes, (32, 48, 48), 5, 2, seed=3).epoch(0))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = list(sampler.epoch(1))
    assert not np.array_equal(first[0], other[0])
    # non-cubic yx patches keep their shape under rotation
    rect = PatchSampler(volumes, (16, 32, 48), 8, 8, seed=0)
    assert next(rect.epoch(0)).shape == (8, 1, 16, 32, 48)


def test_truncated_tiffs_are_refused_in_one_line_without_tifffile_noise(tmp_path: Path, caplog):
    for case, path in truncated_tiffs(tmp_path).items():
        caplog.clear()
        with pytest.raises(UserError, match=": truncated: ") as caught:
            read_volume(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: truncated") and "\n" not in message, (case, message)
        assert any(unit in message for unit in ("MiB", "KiB", " bytes")), (case, message)
        assert not [r for r in caplog.records if r.name.startswith("tifffile")], case
    assert "2 GiB of pixels" in str(pytest.raises(UserError, read_volume, tmp_path / "claimed.tif").value)
    whole = np.random.default_rng(1).integers(0, 60000, (16, 64, 64), dtype=np.uint16)
    for options in ({}, {"compression": "zlib", "rowsperstrip": 8}, {"tile": (16, 16)}, {"bigtiff": True}):
        tifffile.imwrite(tmp_path / "whole.tif", whole, **options)
        np.testing.assert_array_equal(read_volume(tmp_path / "whole.tif"), whole)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 7, 9), r"shape \(2, 7, 9\) is too small: every axis needs at least 3 voxels"),
        ((48, 2, 48), r"shape \(48, 2, 48\) is too small"),
        ((1, 48, 48), r"shape \(1, 48, 48\) is a single 2-D plane; a 3-D \(Z, Y, X\) stack"),
        ((32, 1, 48), r"shape \(32, 1, 48\) is a single 2-D plane"),
        ((48, 48, 1), r"shape \(48, 48, 1\) is a single 2-D plane"),
        ((1, 1, 48), r"shape \(1, 1, 48\) is too small"),
    ],
)
def test_volumes_too_small_to_segment_are_refused_alike_on_every_axis(tmp_path: Path, shape, message):
    from wnet_zoo.io.volumes import check_volume

    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    tifffile.imwrite(tmp_path / "small.tif", data, photometric="minisblack")
    for refuse in (lambda: read_volume(tmp_path / "small.tif"), lambda: check_volume(data, "small.tif")):
        with pytest.raises(UserError, match=message) as caught:
            refuse()
        assert "\n" not in str(caught.value) and "3-D image" not in str(caught.value)
    assert read_volume_shape(tmp_path, (3, 7, 7)) == (3, 7, 7)  # thin confocal stacks are ordinary data


def read_volume_shape(folder: Path, shape: tuple[int, int, int]) -> tuple[int, ...]:
    tifffile.imwrite(folder / "least.tif", np.random.default_rng(0).random(shape, dtype=np.float32))
    return read_volume(folder / "least.tif").shape


def test_channel_messages_count_the_dimensions_truly():
    from wnet_zoo.io.volumes import select_axes

    with pytest.raises(UserError, match=r"5-D stack of shape \(1, 2, 8, 16, 16\) holds 2 channels") as caught:
        select_axes("im.zarr", "TCZYX", (1, 2, 8, 16, 16), None)
    assert "4-D" not in str(caught.value)
    with pytest.raises(UserError, match="4-D stack of shape") as caught:
        select_axes("im.tif", "CZYX", (2, 8, 16, 16), None)
    with pytest.raises(
        UserError, match=r"^channel=0: the stack of shape \(1, 1, 8, 16, 16\) has one channel"
    ) as caught:
        select_axes("im.zarr", "TCZYX", (1, 1, 8, 16, 16), 0)
    assert "4-D" not in str(caught.value)


def test_multi_file_ome_sets_read_whole_and_refused_with_a_file_missing(tmp_path: Path):
    """An OME-TIFF set split over two files (Bio-Formats, Micro-Manager): read whole when both are there, refused
    in one line when one is missing (tifffile would fill its planes with zeros); a cut ImageJ stack likewise."""
    planes = (np.random.default_rng(0).random((16, 32, 32)) * 1000 + 1).astype(np.uint16)
    uuids = {"a": "urn:uuid:11111111-1111-1111-1111-111111111111", "b": "urn:uuid:22222222-2222-2222-2222-222222222222"}
    data = "".join(
        f'<TiffData FirstZ="{z}" IFD="0" PlaneCount="8"><UUID FileName="{n}.ome.tif">{uuids[n]}</UUID></TiffData>'
        for z, n in ((0, "a"), (8, "b"))
    )
    for name, part in (("a", planes[:8]), ("b", planes[8:])):
        description = (
            '<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
            f'UUID="{uuids[name]}"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" '
            'SizeX="32" SizeY="32" SizeZ="16" SizeC="1" SizeT="1"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
            f"{data}</Pixels></Image></OME>"
        )
        tifffile.imwrite(tmp_path / f"{name}.ome.tif", part, description=description, metadata=None)
    np.testing.assert_array_equal(read_volume(tmp_path / "a.ome.tif"), planes)
    (tmp_path / "b.ome.tif").unlink()
    with pytest.raises(UserError, match="truncated: planes of the stack are missing"):
        read_volume(tmp_path / "a.ome.tif")
    tifffile.imwrite(tmp_path / "ij.tif", planes, imagej=True)
    os.truncate(tmp_path / "ij.tif", (tmp_path / "ij.tif").stat().st_size // 2)
    with pytest.raises(UserError, match="truncated: planes of the stack are missing"):
        read_volume(tmp_path / "ij.tif")
