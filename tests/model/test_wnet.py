import numpy as np
import pytest
import torch
from scipy import ndimage

from wnet_zoo.model import architecture
from wnet_zoo.model import wnet as model
from wnet_zoo.model.wnet import WNet3D

from closeness import assert_close
from reference import cellseg3d_wnet_class


def test_cellseg3d_state_dict_loads_strictly_and_matches_outputs():
    torch.manual_seed(0)
    reference = cellseg3d_wnet_class()(1, 1, 2).eval()
    ours = WNet3D().eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())
    x = torch.rand(1, 1, 16, 24, 32) * 100
    with torch.no_grad():
        ref_probs, ref_rec = reference(x)
        probs, rec = ours(x)
        enc_only = ours.encoder(x)
    assert_close(probs, ref_probs, rel=1e-5, what="probabilities")
    assert_close(rec, ref_rec, rel=1e-5, what="reconstruction (0..100 scale)")
    assert torch.equal(enc_only, probs)


def test_the_torch_free_constants_equal_the_model_files():
    assert (architecture.DEFAULT_CHANNELS, architecture.SPATIAL_MULTIPLE) == (
        model.DEFAULT_CHANNELS,
        model.SPATIAL_MULTIPLE,
    )


def test_default_architecture_is_cellseg3d_size():
    model = WNet3D()
    assert sum(p.numel() for p in model.parameters()) == 50_531_843


def test_small_channels_and_outputs():
    model = WNet3D(num_classes=3, channels=(4, 8, 16, 32)).eval()
    x = torch.rand(2, 1, 8, 16, 24)
    probs, rec = model(x)
    assert probs.shape == (2, 3, 8, 16, 24) and rec.shape == (2, 1, 8, 16, 24)
    assert torch.allclose(probs.sum(1), torch.ones(2, 8, 16, 24), atol=1e-5)
    # small models stay small: the output block follows channels[0] instead of CellSeg3D's fixed 64
    assert sum(p.numel() for p in model.parameters()) < 250_000


def test_fused_convolution_pairs_give_the_same_gradients():
    torch.manual_seed(1)
    model = WNet3D(channels=(4, 8, 16, 32), dropout=0.0)
    x = torch.rand(1, 1, 16, 16, 16) * 100
    probs, rec = model(x)
    (probs[:, 0].mean() + rec.mean()).backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    for module in model.modules():
        if hasattr(module, "module"):
            module.forward = lambda t, m=module: m.module(t)  # plain sequential: no fusion
    model.zero_grad()
    probs, rec = model(x)
    (probs[:, 0].mean() + rec.mean()).backward()
    # each gradient to 1e-3 of itself, where it is not far below the whole gradient's scale (some nearly cancel)
    scale = max(grad.abs().max().item() for grad in fused.values())
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, fused[name], rtol=1e-3, atol=1e-6 * scale), name


@pytest.mark.parametrize("shape", [(1, 1, 30, 32, 32), (1, 1, 32, 32), (1, 2, 32, 32, 32)])
def test_bad_input_shapes_are_clear_value_errors(shape):
    model = WNet3D(channels=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="WNet3D"):
        model(torch.rand(*shape))


def test_bad_channels():
    with pytest.raises(ValueError, match="channels"):
        WNet3D(channels=(4, 8, 16))


def test_input_smoothing_is_a_gaussian_with_replicated_edges_and_travels_with_the_weights():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16, 24) * 100
    sigma = (0.5, 1.0, 2.0)
    smoothed = model.InputSmoothing(sigma)(x)
    for image, ours in zip(x, smoothed, strict=True):
        expected = ndimage.gaussian_filter(image[0].double().numpy(), sigma, mode="nearest")
        assert_close(ours[0], expected, rel=1e-5, what="smoothed 0..100 image")
    assert torch.equal(model.InputSmoothing()(x), x)

    smoothing = WNet3D(channels=(4, 8, 16, 32), input_sigma=sigma).eval()
    plain = WNet3D(channels=(4, 8, 16, 32)).eval()
    assert "encoder.smooth.input_sigma" not in plain.state_dict()  # CellSeg3D's keys exactly
    state = smoothing.state_dict()
    assert state["encoder.smooth.input_sigma"].tolist() == list(sigma)
    assert smoothing.architecture()["input_sigma"] == list(sigma)
    plain.load_state_dict({k: v for k, v in state.items() if "smooth" not in k})
    with torch.no_grad():  # the encoder sees the smoothed image; the decoder reconstructs from its classes
        assert_close(smoothing.encoder(x), plain.encoder(smoothed), rel=1e-5, what="probabilities")
        assert not torch.allclose(smoothing.encoder(x), plain.encoder(x), atol=1e-3)
    with pytest.raises(ValueError, match=r"trained with input smoothing sigma \(0.5, 1.0, 2.0\)"):
        WNet3D(channels=(4, 8, 16, 32), input_sigma=(1, 1, 1)).load_state_dict(state)
    with pytest.raises(ValueError, match="input smoothing sigma"):
        WNet3D(channels=(4, 8, 16, 32), input_sigma=(1, 1, 1)).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="input_sigma must be"):
        WNet3D(input_sigma=(1, -1, 1))


def test_input_compression_is_the_numpy_logarithm_keeps_the_range_and_travels_with_the_weights():
    from wnet_zoo.io.intensity import compress_intensities

    x = torch.rand(2, 1, 8, 16, 16, dtype=torch.float64) * 100
    x[0, 0, 0, 0, :2] = torch.tensor([0.0, -3.0])
    compress = model.InputCompression(2.5)
    ours = compress(x.float())
    assert_close(ours, compress_intensities(x.numpy(), 2.5), rel=1e-5, what="compressed 0..100 image")
    assert compress(torch.tensor([0.0, -1.0, 2.5, 100.0])).tolist() == pytest.approx(
        [0.0, 0.0, 100 * np.log(2) / np.log1p(40), 100.0], rel=1e-5
    )
    assert model.InputCompression(0.0)(x) is x
    plain = WNet3D(channels=(4, 8, 16, 32)).eval()
    both = WNet3D(channels=(4, 8, 16, 32), input_log=2.5, input_sigma=(1, 1, 1)).eval()
    assert "encoder.compress.input_log" not in plain.state_dict()
    state = both.state_dict()
    assert float(state["encoder.compress.input_log"]) == 2.5 and both.input_log == 2.5
    assert both.architecture()["input_log"] == 2.5 and plain.architecture()["input_log"] == 0.0
    plain.load_state_dict({k: v for k, v in state.items() if "compress" not in k and "smooth" not in k})
    prepared = model.InputSmoothing((1, 1, 1))(compress(x.float()))
    with torch.no_grad():  # compressed first, then smoothed
        assert_close(both.encoder(x.float()), plain.encoder(prepared), rel=1e-5, what="probabilities")
    with pytest.raises(ValueError, match="trained with input log offset 2.5"):
        WNet3D(channels=(4, 8, 16, 32), input_log=1.0, input_sigma=(1, 1, 1)).load_state_dict(state)
    with pytest.raises(ValueError, match="input_log must be"):
        WNet3D(input_log=-1)


def test_input_flattening_removes_a_smooth_background_keeps_nuclei_and_travels_with_the_weights():
    from wnet_zoo.io.intensity import subtract_background

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (16, 40, 40)), indexing="ij")
    background = 20 + 15 * np.sin(x / 9) * np.cos(y / 11)  # varies as much as the nuclei stand above it
    nuclei = np.zeros_like(background)
    for cz, cy, cx in ((8, 10, 10), (8, 28, 12), (7, 20, 30)):
        nuclei[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= 9] = 30
    image = background + nuclei + rng.normal(0, 1, background.shape).astype(np.float32)
    flatten = model.InputFlattening((4, 4, 4))
    ours = flatten(torch.from_numpy(image)[None, None])[0, 0].numpy()
    assert_close(ours, subtract_background(image, (4, 4, 4))[0], rel=1e-5, what="flattened image")  # the numpy twin
    inside, outside = ours[nuclei > 0], ours[(nuclei == 0) & (background > 0)]
    assert inside.mean() - outside.mean() > 20  # the nuclei keep most of their contrast ...
    assert np.percentile(outside, 95) - np.percentile(outside, 5) < 10  # ... and the 30-unit background is gone
    assert np.percentile(image[nuclei == 0], 95) - np.percentile(image[nuclei == 0], 5) > 25
    unchanged = torch.from_numpy(image)
    assert model.InputFlattening((0, 0, 0))(unchanged) is unchanged
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in bf16 training: still float32, as the exports compute
        under = flatten(torch.from_numpy(image)[None, None])[0, 0]
    assert under.dtype == torch.float32
    assert_close(under.numpy(), ours, rel=1e-5, what="flattened image under autocast")
    plain = WNet3D(channels=(4, 8, 16, 32)).eval()
    flat = WNet3D(channels=(4, 8, 16, 32), input_background=(2, 4, 4)).eval()
    assert "encoder.flatten.input_background" not in plain.state_dict()
    state = flat.state_dict()
    assert state["encoder.flatten.input_background"].tolist() == [2, 4, 4] and flat.input_background == (2, 4, 4)
    assert flat.architecture()["input_background"] == [2, 4, 4]
    with pytest.raises(ValueError, match=r"trained with input background radius \(2, 4, 4\)"):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match="0 on every axis or on none"):
        WNet3D(input_background=(0, 4, 4))
    with pytest.raises(ValueError, match="input_background must be 3 whole numbers"):
        WNet3D(input_background=(1.5, 4, 4))
