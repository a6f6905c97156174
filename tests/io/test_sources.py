"""Reading regions of TIFF stacks and zarr volumes without loading them whole."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from wnet_zoo.errors import UserError
from wnet_zoo.io.sources import SourceSpec, TiffSource, ZarrSource, collect_sources, is_zarr

from tiffs import truncated_tiffs

REGIONS = [np.s_[0:5, 0:17, 0:19], np.s_[3:7, 4:9, 0:19], np.s_[6:7, 16:17, 18:19], np.s_[1:6, 2:15, 5:11]]


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 60000, size=(7, 17, 19), dtype=np.uint16)


@pytest.mark.parametrize(
    "options", [{}, {"compression": "zlib", "rowsperstrip": 3}, {"tile": (16, 16)}, {"byteorder": ">"}]
)
def test_tiff_regions_equal_the_array(tmp_path, stack, options):
    tifffile.imwrite(tmp_path / "s.tif", stack, **options)
    with SourceSpec(tmp_path / "s.tif").open() as source:
        assert isinstance(source, TiffSource) and source.shape == stack.shape and source.nbytes == stack.nbytes
        for region in REGIONS:
            read = source.read(region)
            assert read.dtype == np.float32
            np.testing.assert_array_equal(read, stack[region])


def test_contiguous_tiff_is_read_by_rows_not_through_zarr(tmp_path, stack):
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    tifffile.imwrite(tmp_path / "packed.tif", stack, compression="zlib")
    with SourceSpec(tmp_path / "plain.tif").open() as plain, SourceSpec(tmp_path / "packed.tif").open() as packed:
        assert plain._series is None and packed._series is not None
        assert packed._zarr is None  # zarr (0.3 s to import) waits for the first read
        packed.read(REGIONS[0])
        plain.read(REGIONS[0])
        assert plain._zarr is None and packed._zarr is not None


def test_four_d_stacks_need_a_channel(tmp_path, stack):
    tifffile.imwrite(tmp_path / "c.tif", np.stack([stack, stack + 1]))
    zarr.create_array(str(tmp_path / "c.zarr"), data=np.stack([stack, stack + 1])[None], chunks=(1, 1, 4, 8, 8))
    for name in ("c.tif", "c.zarr"):
        with pytest.raises(UserError, match="channel=N"):
            SourceSpec(tmp_path / name).open()
        with pytest.raises(UserError, match="out of range"):
            SourceSpec(tmp_path / name, channel=2).open()
        with SourceSpec(tmp_path / name, channel=1).open() as source:
            assert source.shape == stack.shape
            np.testing.assert_array_equal(source.read(REGIONS[3]), stack[REGIONS[3]] + 1)


def test_ome_zarr_levels_voxel_size_and_errors(tmp_path, stack):
    group = zarr.open_group(str(tmp_path / "im.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("s0", data=stack[None, None], chunks=(1, 1, 4, 8, 8))
    group.create_array("s1", data=stack[None, None, :, ::2, ::2], chunks=(1, 1, 4, 8, 8))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    datasets = [
        {
            "path": f"s{level}",
            "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 3.0, 2.0**level, 2.0**level]}],
        }
        for level in (0, 1)
    ]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    with SourceSpec(tmp_path / "im.ome.zarr", level=1).open() as source:
        assert isinstance(source, ZarrSource) and source.shape == (7, 9, 10)
        assert source.voxel_size[:3] == (3.0, 2.0, 2.0) and source.voxel_size.unit == "µm"
        assert source.ome.version == "0.4"
        np.testing.assert_array_equal(source.read(np.s_[1:3, 2:5, 0:4]), stack[1:3, ::2, ::2][:, 2:5, 0:4])
    with pytest.raises(UserError, match="levels 0..1"):
        SourceSpec(tmp_path / "im.ome.zarr", level=2).open()
    tifffile.imwrite(tmp_path / "s.tif", stack)
    with pytest.raises(UserError, match="level applies to OME-Zarr images; a TIFF has one level, drop level$"):
        SourceSpec(tmp_path / "s.tif", level=1).open()


def test_collect_sources_keeps_stores_whole(tmp_path, stack):
    zarr.create_array(str(tmp_path / "a.zarr"), data=stack, chunks=(4, 8, 8))
    tifffile.imwrite(tmp_path / "b.tif", stack)
    (tmp_path / "notes.txt").write_text("x")
    found = collect_sources([tmp_path])
    assert [s.path.name for s in found] == ["a.zarr", "b.tif"] and [s.stem for s in found] == ["a", "b"]
    assert is_zarr(tmp_path / "a.zarr") and not is_zarr(tmp_path / "b.tif")
    assert SourceSpec(tmp_path / "x.ome.tif").stem == "x" and SourceSpec(tmp_path / "y.ome.zarr").stem == "y"
    with pytest.raises(UserError, match="no such file"):
        collect_sources([tmp_path / "absent.zarr"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no"):
        collect_sources([tmp_path / "empty"])


def test_hyperstack_axes_and_singleton_axes_in_both_readers(tmp_path, stack):
    from wnet_zoo.io.volumes import read_volume

    two = np.stack([stack, stack + 1], axis=1)  # ImageJ hyperstack order: Z, C, Y, X
    tifffile.imwrite(tmp_path / "zcyx.tif", two, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "z1yx.tif", stack[:, None])  # a length-1 axis between Z and Y
    for name, channel, expected in (("zcyx.tif", 1, stack + 1), ("z1yx.tif", None, stack)):
        np.testing.assert_array_equal(read_volume(tmp_path / name, channel), expected)
        with SourceSpec(tmp_path / name, channel=channel).open() as source:
            assert source.shape == stack.shape and source._zarr is None
            np.testing.assert_array_equal(source.read(REGIONS[3]), expected[REGIONS[3]])


def test_missing_ome_level_array_is_a_user_error(tmp_path, stack):
    group = zarr.open_group(str(tmp_path / "broken.zarr"), mode="w")
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [], "datasets": [{"path": "0"}]}]
    with pytest.raises(UserError, match="missing"):
        SourceSpec(tmp_path / "broken.zarr").open()


def test_whole_plane_compressed_strips_are_refused_for_streaming(tmp_path, monkeypatch):
    import wnet_zoo.io.sources

    monkeypatch.setattr(wnet_zoo.io.sources, "_MAX_CHUNK_BYTES", 1000)
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((8, 40, 40), np.uint16), compression="zlib", rowsperstrip=40)
    with pytest.raises(UserError, match="save it uncompressed"):
        SourceSpec(tmp_path / "p.tif").open()


def test_truncated_tiffs_are_refused_when_opened_without_tifffile_noise(tmp_path, caplog):
    for case, path in truncated_tiffs(tmp_path).items():
        caplog.clear()
        with pytest.raises(UserError, match=": truncated: ") as caught:
            SourceSpec(path).open()
        assert str(caught.value).startswith(f"{path}: truncated") and "\n" not in str(caught.value), case
        assert not [r for r in caplog.records if r.name.startswith("tifffile")], case


def test_sources_too_small_to_segment_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    zarr.create_array(str(tmp_path / "small.zarr"), data=rng.random((2, 7, 9), dtype=np.float32))
    zarr.create_array(str(tmp_path / "plane.zarr"), data=rng.random((1, 1, 1, 48, 48), dtype=np.float32))
    tifffile.imwrite(tmp_path / "row.tif", rng.random((32, 1, 48), dtype=np.float32))
    tifffile.imwrite(tmp_path / "plane.tif", rng.random((1, 48, 48), dtype=np.float32))
    cases = {
        "small.zarr": r"shape \(2, 7, 9\) is too small: every axis needs at least 3 voxels",
        "plane.zarr": r"is a single 2-D plane; a 3-D \(Z, Y, X\) stack",
        "row.tif": r"shape \(32, 1, 48\) is a single 2-D plane",
        "plane.tif": r"shape \(1, 48, 48\) is a single 2-D plane",
    }
    for name, message in cases.items():
        with pytest.raises(UserError, match=message):
            SourceSpec(tmp_path / name).open()
    zarr.create_array(str(tmp_path / "least.zarr"), data=rng.random((3, 7, 7), dtype=np.float32))
    with SourceSpec(tmp_path / "least.zarr").open() as source:
        assert source.shape == (3, 7, 7)


def test_five_d_stacks_are_called_five_d(tmp_path, stack):
    zarr.create_array(str(tmp_path / "tczyx.zarr"), data=np.stack([stack, stack])[None], chunks=(1, 1, 4, 8, 8))
    with pytest.raises(UserError, match=r"5-D stack of shape \(1, 2, 7, 17, 19\) holds 2 channels") as caught:
        SourceSpec(tmp_path / "tczyx.zarr").open()
    assert "4-D" not in str(caught.value)
