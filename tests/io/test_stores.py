"""Result stores: TIFF files filled block by block, zarr and OME-Zarr stores with the voxel size."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from wnet_zoo.io.sources import OmeImage
from wnet_zoo.io.stores import create_zarr, open_zarr, write_tiff_blocks
from wnet_zoo.io.voxels import VoxelSize, read_voxel_size
from wnet_zoo.prediction.stream.jobs import BlockGrid


@pytest.mark.parametrize("shape", [(9, 20, 23), (3, 9, 20, 23)], ids=["ZYX", "CZYX"])
def test_tiff_written_block_by_block_equals_the_array(tmp_path, shape):
    data = np.random.default_rng(1).random(shape, dtype=np.float32)
    grid = BlockGrid(shape[-3:], (4, 8, 8))
    regions = [grid.region(i) for i in range(len(grid))]
    write_tiff_blocks(tmp_path / "r.tif", shape, np.float32, regions, data, VoxelSize(2.0, 0.5, 0.25))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "r.tif"), data)
    assert read_voxel_size(tmp_path / "r.tif")[:3] == (2.0, 0.5, 0.25)
    with tifffile.TiffFile(tmp_path / "r.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == ("CZYX" if len(shape) == 4 else "ZYX")


def test_block_grid_tiles_the_volume_once():
    grid = BlockGrid((9, 20, 23), (4, 8, 8))
    assert grid.counts == (3, 3, 3) and len(grid) == 27
    cover = np.zeros(grid.shape, dtype=int)
    for index in range(len(grid)):
        cover[grid.region(index)] += 1
    assert (cover == 1).all()
    assert grid.region(1) == (slice(0, 4), slice(0, 8), slice(8, 16))  # x fastest
    assert grid.neighbour(0, 0) == 9 and grid.neighbour(0, 2) == 1 and grid.neighbour(26, 1) is None


def test_zarr_stores_plain_ome_04_and_05(tmp_path):
    plain = create_zarr(tmp_path / "plain.zarr", (4, 6, 8), np.uint8, (2, 3, 4))
    plain[...] = 7
    assert isinstance(zarr.open(str(tmp_path / "plain.zarr"), mode="r"), zarr.Array)
    assert open_zarr(tmp_path / "plain.zarr", "r")[...].sum() == 7 * 4 * 6 * 8

    create_zarr(tmp_path / "v04.zarr", (2, 4, 6, 8), np.float32, (2, 2, 3, 4), VoxelSize(3.0, 1.0, 1.0))
    group = zarr.open_group(str(tmp_path / "v04.zarr"), mode="r")
    assert group.metadata.zarr_format == 2
    (multiscale,) = group.attrs["multiscales"]
    assert multiscale["version"] == "0.4" and [a["name"] for a in multiscale["axes"]] == ["c", "z", "y", "x"]
    assert multiscale["axes"][1]["unit"] == "micrometer"
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 3.0, 1.0, 1.0]
    assert open_zarr(tmp_path / "v04.zarr").shape == (2, 4, 6, 8)

    create_zarr(tmp_path / "v05.zarr", (4, 6, 8), np.uint16, (2, 3, 4), ome=OmeImage("0.5", (2.0, 0.5, 0.5), "µm"))
    group = zarr.open_group(str(tmp_path / "v05.zarr"), mode="r")
    assert group.metadata.zarr_format == 3 and group.attrs["ome"]["version"] == "0.5"
    dataset = group.attrs["ome"]["multiscales"][0]["datasets"][0]
    assert dataset["coordinateTransformations"][0]["scale"] == [2.0, 0.5, 0.5]
