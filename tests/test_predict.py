"""Sliding-window prediction: blending, padding and shapes for tiles of any size."""

import numpy as np
import pytest
import torch
from torch import nn

from cosas_tutorial.evaluate import predict_tile, window_grid
from cosas_tutorial.model import build_model


class PixelModel(nn.Module):
    """A logit that is a fixed function of each pixel's colour alone (a 1×1 convolution)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([4.0, -3.0, 2.0]).view(1, 3, 1, 1))
            self.conv.bias.fill_(-1.0)

    def forward(self, x):
        return self.conv(x)

    def whole_image(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            return torch.sigmoid(self(x))[0, 0].numpy()


def tile(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "shape, window",
    [
        ((150, 150), 64),  # stand-ins for 1500² and 824×2240 at a tenth of the size
        ((82, 224), 32),
        ((1500, 1500), 512),  # the real sizes, the real window
        ((824, 2240), 512),
        ((20, 40), 64),  # smaller than one window
    ],
)
def test_blended_windows_equal_the_whole_image_for_a_per_pixel_model(shape, window):
    model, image = PixelModel(), tile(*shape)
    prob = predict_tile(model, image, window, batch_size=5)
    assert prob.shape == shape and prob.dtype == np.float32
    np.testing.assert_allclose(prob, model.whole_image(image), rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape", [(151, 83), (97, 211), (33, 31)])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_output_has_the_input_shape_for_odd_sizes(shape, scale):
    prob = predict_tile(PixelModel(), tile(*shape), 64, scale=scale, overlap=0.5, tta=True)
    assert prob.shape == shape
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1


def test_rescaled_prediction_of_a_constant_tile_is_constant():
    image = np.full((157, 90, 3), (200, 90, 140), np.uint8)
    prob = predict_tile(PixelModel(), image, 64, scale=0.37)
    np.testing.assert_allclose(prob, PixelModel().whole_image(image[:1, :1])[0, 0], atol=1e-6)


@pytest.mark.parametrize(
    "length, window, overlap",
    [
        (1500, 512, 0.25),
        (2240, 512, 0.5),
        (824, 512, 0.25),
        (150, 64, 0.25),
        (97, 32, 0.0),
        (512, 512, 0.25),
    ],
)
def test_window_grid_covers_with_the_overlap_and_no_extra_window(length, window, overlap):
    count, stride, padded = window_grid(length, window, overlap)
    assert padded == window + stride * (count - 1) >= length
    if count > 1:
        assert stride <= window * (1 - overlap)  # at least the overlap asked for
        assert padded - length < count - 1  # padding under a pixel per window
    longest = max(1, int(window * (1 - overlap)))
    assert count == max(1, -(-(length - window) // longest) + 1)  # as many as a fixed stride


def test_a_real_model_on_cosas_sized_tiles():
    torch.manual_seed(0)
    model = build_model("mit_b0")
    for shape in ((1500, 1500), (824, 2240)):  # at a quarter of the scale: 375², 206×560
        prob = predict_tile(model, tile(*shape), 128, scale=0.25)
        assert prob.shape == shape and np.isfinite(prob).all()
        assert 0 <= prob.min() and prob.max() <= 1


def test_window_must_suit_the_encoder():
    with pytest.raises(ValueError, match="multiple of 32"):
        predict_tile(PixelModel(), tile(64, 64), 48)
