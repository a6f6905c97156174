from pathlib import Path

import pytest
import torch

from wnet_zoo.errors import UserError
from wnet_zoo.model.checkpoints import load_weights, save_checkpoint
from wnet_zoo.model.wnet import WNet3D

from reference import cellseg3d_wnet_class


@pytest.fixture(scope="module")
def tiny() -> WNet3D:
    torch.manual_seed(0)
    return WNet3D(in_channels=1, out_channels=1, num_classes=3, channels=(4, 8, 16, 32))


TINY_ARCH = {
    "in_channels": 1,
    "out_channels": 1,
    "num_classes": 3,
    "channels": [4, 8, 16, 32],
    "input_sigma": [0.0] * 3,
    "input_log": 0.0,
    "input_background": [0] * 3,
}


def _same(model: WNet3D, other: WNet3D) -> bool:
    a, b = model.state_dict(), other.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_our_checkpoint_and_run_directory(tmp_path: Path, tiny: WNet3D):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "last.pt", {"model": tiny.state_dict(), "epoch": 3, "config": {"dropout": 0.5}})
    assert not list(run.glob(".*tmp"))
    for source in (run, run / "last.pt"):
        loaded = load_weights(source)
        assert loaded.architecture == TINY_ARCH
        assert loaded.epoch == 3 and loaded.config == {"dropout": 0.5}
        assert _same(loaded.build_model(), tiny)
    save_checkpoint(run / "best.pt", {"model": tiny.state_dict(), "epoch": 2})
    assert load_weights(run).source.name == "best.pt"


def test_bare_and_prefixed_state_dicts(tmp_path: Path, tiny: WNet3D):
    bare = tmp_path / "bare.pth"
    torch.save(tiny.state_dict(), bare)
    assert _same(load_weights(bare).build_model(), tiny)
    prefixed = tmp_path / "prefixed.pt"
    torch.save({"model": {f"module._orig_mod.{k}": v for k, v in tiny.state_dict().items()}}, prefixed)
    loaded = load_weights(prefixed)
    assert loaded.epoch is None and _same(loaded.build_model(), tiny)


def test_cellseg3d_pth_default_architecture(tmp_path: Path):
    torch.manual_seed(0)
    reference = cellseg3d_wnet_class()(1, 1, 2)
    path = tmp_path / "wnet.pth"
    torch.save(reference.state_dict(), path)
    loaded = load_weights(path)
    assert loaded.architecture == {
        "in_channels": 1,
        "out_channels": 1,
        "num_classes": 2,
        "channels": [64, 128, 256, 512],
        "input_sigma": [0.0, 0.0, 0.0],  # CellSeg3D's model neither smooths, flattens nor compresses its input
        "input_log": 0.0,
        "input_background": [0, 0, 0],
    }
    model = loaded.build_model()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_weights_only_refuses_code(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": Path("/")}, path)
    with pytest.raises(UserError, match="cannot be read as PyTorch weights"):
        load_weights(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, not a checkpoint", "cannot be read"),
        ("truncated", "cannot be read"),
        ({"conv.weight": torch.zeros(3, 3)}, "not a WNet3D state dict"),
        ({"epoch": 3}, "no state dict"),
    ],
)
def test_not_a_model(tmp_path: Path, tiny: WNet3D, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        torch.save(tiny.state_dict(), path)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        torch.save(content, path)
    with pytest.raises(UserError, match=message):
        load_weights(path)


def test_mismatched_shapes_and_missing_sources(tmp_path: Path, tiny: WNet3D):
    state = dict(tiny.state_dict())
    state["decoder.bot.module.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="do not fit"):
        load_weights(tmp_path / "odd.pt")
    with pytest.raises(UserError, match="no such file"):
        load_weights(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="no best.pt, last.pt"):
        load_weights(tmp_path)


def test_tar_gz_with_one_pth(tmp_path: Path, tiny: WNet3D):
    import tarfile

    pth = tmp_path / "wnet_latest.pth"
    torch.save(tiny.state_dict(), pth)
    archive = tmp_path / "wnet_latest.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pth, arcname="wnet_latest/wnet_latest.pth")
    loaded = load_weights(archive)
    assert loaded.source == archive and _same(loaded.build_model(), tiny)
    two = tmp_path / "two.tar.gz"
    with tarfile.open(two, "w:gz") as tar:
        tar.add(pth, arcname="a.pth")
        tar.add(pth, arcname="b.pth")
    with pytest.raises(UserError, match="holds 2 .pth"):
        load_weights(two)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(pth, arcname="../../escape.pth")
    with pytest.raises(UserError, match="not a readable tar"):
        load_weights(evil)
    assert not (tmp_path.parent / "escape.pth").exists()
