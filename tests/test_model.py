import pytest
import torch

from cosas_tutorial.model import (
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


def test_unreachable_weights_say_how_to_proceed(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-cosas-test-cache")
    with pytest.raises(WeightsUnavailableError, match="--weights none"):
        build_model("mit_b0", weights="imagenet")
