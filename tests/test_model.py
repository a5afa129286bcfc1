import huggingface_hub
import pytest
import segmentation_models_pytorch as smp
import torch

from cosas_tutorial.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightsUnavailableError,
    build_model,
    check_input_size,
    count_flops,
    count_parameters,
)


def test_fpn_mit_b0_shapes_and_size():
    model = build_model("mit_b0").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96))
    assert out.shape == (2, 1, 64, 96)  # one tumour logit per pixel, input resolution
    assert 4.5e6 < count_parameters(model) < 5.5e6  # FPN + MiT-B0 ≈ 5.1M
    assert count_flops(model, 64) < count_flops(model, 128)


def test_sizes_not_divisible_by_32_get_an_actionable_error():
    check_input_size(1024, 1504)
    with pytest.raises(ValueError, match=r"pad to \(1504, 832\)"):
        check_input_size(1500, 824)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="mit_b0"):
        build_model("resnet50")


def test_unreachable_weights_say_how_to_proceed(monkeypatch, tmp_path):
    # the hub client read HF_HUB_OFFLINE and its cache folder when it was imported, so setting
    # the environment here would change nothing (it would retry the network for ~20 s)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        WeightsUnavailableError, match='offline mode.*WEIGHTS = "none".*--weights none'
    ) as raised:
        build_model("mit_b0", weights="imagenet")
    assert raised.value.reason.startswith("the model hub is in offline mode")


def test_model_standardises_its_input_with_imagenet_statistics():
    model = build_model("mit_b0").eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        by_hand = smp.FPN.forward(model, (x - mean) / std)  # the plain smp forward
        unscaled = smp.FPN.forward(model, x)
    assert torch.allclose(ours, by_hand, atol=1e-5)
    assert not torch.allclose(ours, unscaled, atol=1e-3)
    # the statistics are not saved: a state dict loads into a plain smp FPN and back
    plain = smp.FPN(encoder_name="mit_b0", encoder_weights=None, classes=1)
    plain.load_state_dict(model.state_dict())
    build_model("mit_b0").load_state_dict(plain.state_dict())
