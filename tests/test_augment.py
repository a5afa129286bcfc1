"""Colour augmentation: seeded, in range, identity at zero strength, layout-independent."""

import numpy as np
import pytest
import torch

from cosas_tutorial.augment import augment_colours, colour_jitter, hed_jitter, hue_matrices


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_augmentation_is_a_function_of_the_seed_and_stays_in_range():
    images = torch.rand(8, 3, 32, 32)
    a = augment_colours(images, generator(1), "hsv")
    b = augment_colours(images, generator(1), "hsv")
    c = augment_colours(images, generator(2), "hsv")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    changed = (augment_colours(images, generator(3), "hed") - images).abs().amax((1, 2, 3))
    assert torch.all(changed > 1e-3)  # every image gets its own jitter


@pytest.mark.parametrize("jitter", [colour_jitter, hed_jitter])
def test_zero_strength_is_the_identity(jitter):
    images = torch.rand(4, 3, 16, 16) * 0.9 + 0.05
    assert torch.allclose(jitter(images, generator(), 0.0), images, atol=1e-5)


@pytest.mark.parametrize("stain", ["none", "hed"])
def test_the_memory_layout_does_not_change_the_result(stain):
    images = torch.rand(4, 3, 24, 24)
    plain = augment_colours(images, generator(5), stain)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(augment_colours(channels_last, generator(5), stain), plain, atol=1e-6)


def test_hue_rotation_keeps_grey_and_a_full_turn_is_the_identity():
    rotations = hue_matrices(np.array([0.3, 1.0, -2.0]))
    assert np.allclose(rotations @ np.ones(3), np.ones(3))
    assert np.allclose(hue_matrices(np.array([2 * np.pi])), np.eye(3))
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3))  # a rotation
