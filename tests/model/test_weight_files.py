import pytest
import torch

from wnet_zoo.model.weight_files import from_byte_planes, to_byte_planes
from wnet_zoo.model.wnet import WNet3D


def test_byte_planes_give_back_every_tensor_bit_for_bit():
    torch.manual_seed(0)
    state = WNet3D(channels=(4, 8, 16, 32)).decoder.state_dict()
    state["half"] = torch.randn(3, 5).half()
    state["nan"] = torch.tensor([float("nan"), -0.0, float("inf")])
    state["scalar"] = torch.tensor(7, dtype=torch.int64)
    state["brain"] = torch.randn(4, 3).bfloat16()
    state["flags"] = torch.tensor([True, False, True])
    state["empty"] = torch.zeros(0, 3)
    state["strided"] = torch.arange(24, dtype=torch.float64).reshape(4, 6).T  # not contiguous
    planes = to_byte_planes(state)
    assert planes["half"]["planes"].shape == (2, 15) and planes["half"]["planes"].dtype == torch.uint8
    back = from_byte_planes(planes)
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and back[key].shape == tensor.shape, key
        assert torch.equal(back[key].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), key


def test_byte_planes_are_refused_unless_they_are_ours():
    (entry,) = to_byte_planes({"w": torch.arange(6.0)}).values()
    wrong = [
        {**entry, "dtype": "load"},  # a torch function, not a dtype
        {**entry, "planes": torch.ones(4, 6)},  # not bytes
        {**entry, "planes": torch.zeros(8, 3, dtype=torch.uint8)},  # 24 bytes, but not 6 float32 in 4 planes
        {**entry, "planes": entry["planes"].T.reshape(-1)},  # the interleaved bytes
        {**entry, "shape": [2, "3"]},
        {**entry, "shape": [-1]},
        {"planes": entry["planes"]},
        "bytes",
    ]
    for malformed in wrong:
        with pytest.raises(ValueError, match="byte planes"):
            from_byte_planes({"w": malformed})
