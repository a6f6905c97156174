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
    state["strided"] = torch.arange(24, dtype=torch.float64).reshape(4, 6).T  # not contiguous
    planes = to_byte_planes(state)
    assert planes["half"]["planes"].shape == (2, 15) and planes["half"]["planes"].dtype == torch.uint8
    back = from_byte_planes(planes)
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and back[key].shape == tensor.shape, key
        assert torch.equal(back[key].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), key


def test_byte_planes_are_refused_unless_they_are_ours():
    planes = to_byte_planes({"w": torch.ones(2)})
    with pytest.raises(ValueError, match="byte planes"):
        from_byte_planes({"w": {**planes["w"], "dtype": "load"}})  # a torch function, not a dtype
    with pytest.raises(ValueError, match="byte planes"):
        from_byte_planes({"w": {**planes["w"], "planes": torch.ones(4, 2)}})
