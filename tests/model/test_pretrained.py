"""The pretrained WNet3D that ships with wnet-zoo: it loads as any weights do, is compact, and says what it is."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from wnet_zoo.cli import main
from wnet_zoo.errors import UserError
from wnet_zoo.model.checkpoints import load_weights
from wnet_zoo.model.pretrained import bundled_card, bundled_weights, describe_bundled
from wnet_zoo.model.wnet import WNet3D
from wnet_zoo.training.config import TrainConfig
from wnet_zoo.training.data import prepare_data

from phantoms import HELD_OUT, SETTINGS
from pretrain import (
    LEFT_OUT,
    PRETRAIN_SEED_OFFSET,
    REAL_VOLUMES,
    as_the_model_sees_it,
    install_pretrained,
    read_as_written,
)
from tiffs import noisy_nuclei


def test_bundled_model_loads_compact_and_without_input_transform():
    weights = load_weights("bundled")
    assert weights.source == bundled_weights()
    assert weights.architecture["channels"] == [16, 32, 64, 128] and weights.architecture["num_classes"] == 2
    assert weights.architecture["input_log"] == 0 and not any(weights.architecture["input_sigma"])
    assert not any(weights.architecture["input_background"])
    assert all(value.dtype == torch.float32 for value in weights.state_dict.values())
    assert bundled_weights().stat().st_size <= 15 * 2**20  # fits in the wheel
    model = weights.build_model().eval()
    with torch.no_grad():
        probs = model.encoder(torch.rand(1, 1, 16, 16, 16) * 100)
    assert torch.allclose(probs.sum(dim=1), torch.ones(1, 16, 16, 16), atol=1e-5)


def test_card_names_data_recipe_and_machine():
    card = bundled_card()
    assert card["recipe"] == "benchmarks/pretrain.py" and card["channels"] == [16, 32, 64, 128]
    # no volume the benchmarks score on: held-out kinds stay out, phantoms are drawn with other seeds
    kept = {f"{name}.tif" for name in SETTINGS if name not in LEFT_OUT}
    assert set(card["images"]) == {*REAL_VOLUMES, *kept} and not set(HELD_OUT) - set(LEFT_OUT)
    assert card["phantom_seeds"] == f"each setting's own + {PRETRAIN_SEED_OFFSET}"
    assert {"cpu", "cpu_bf16", "torch"} <= set(card["machine"])
    assert card["inputs"].endswith("read without the 0..100 remap")  # made by the recipe with read_as_written
    assert describe_bundled().startswith("bundled pretrained WNet3D (channels 16,32,64,128; trained ")


def test_install_refuses_weights_with_an_input_transform(tmp_path: Path):
    path = tmp_path / "smoothing.pt"
    torch.save(WNet3D(channels=(4, 8, 16, 32), input_sigma=(1.0, 1.0, 1.0)).state_dict(), path)
    with pytest.raises(UserError, match="without an input transform"):
        install_pretrained(path, {}, folder=tmp_path / "bundled")
    assert not (tmp_path / "bundled").exists()
    plain = tmp_path / "plain.pt"
    torch.save({"model": WNet3D(channels=(4, 8, 16, 32)).state_dict(), "optimizer": {}}, plain)
    installed = install_pretrained(plain, {"trained": "today"}, folder=tmp_path / "bundled")
    assert set(torch.load(installed, weights_only=True)) == set(WNet3D(channels=(4, 8, 16, 32)).state_dict())


def test_pretraining_sees_each_volume_with_the_range_its_transform_leaves(tmp_path: Path):
    """A noisy volume, smoothed as fine-tuning will show it, spans a fraction of 0..100: pretraining must not
    stretch it back (the network would learn a contrast fine-tuned models never see)."""
    path = noisy_nuclei(tmp_path / "noisy.tif", seed=3, nucleus=400.0)
    assert as_the_model_sees_it(path)["input_smoothing"] > 0
    seen = tifffile.imread(path)
    assert seen.max() - seen.min() < 60  # smoothing narrowed the 0..100 remap
    config = TrainConfig(images=[str(path)], screen=False)
    with read_as_written():
        (read,) = prepare_data(config).volumes
    np.testing.assert_array_equal(read, seen)
    (remapped,) = prepare_data(config).volumes  # the usual remap is back afterwards
    assert remapped.min() == 0 and remapped.max() == 100


@pytest.mark.slow
def test_bundled_model_exports_to_a_package_bioimageio_core_passes(tmp_path: Path):
    from bioimageio.core import test_model

    assert main(["export", "bundled", "--out", str(tmp_path / "export")]) == 0
    (package,) = (tmp_path / "export").glob("*.bioimageio.zip")
    summary = test_model(package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
