import torch

from cosas_tutorial.augment import augment_batch, flip_rotate, hue_rotate


def generator(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_geometry_keeps_image_and_mask_aligned():
    # the mask is drawn from the image itself, so any misalignment shows as a mismatch
    images = torch.rand(16, 3, 32, 32)
    masks = (images[:, :1] > 0.5).float()
    out_images, out_masks = augment_batch(images, masks, generator(), stain_aug="hed")
    geo_images, geo_masks = flip_rotate(images, masks, generator())
    assert torch.equal(geo_masks, (geo_images[:, :1] > 0.5).float())
    assert out_masks.shape == masks.shape and set(out_masks.unique().tolist()) <= {0.0, 1.0}
    assert out_images.min() >= 0 and out_images.max() <= 1
    changed = [not torch.equal(geo_images[i], images[i]) for i in range(16)]
    assert any(changed) and not all(changed)  # some samples transformed, some not


def test_augmentation_is_a_function_of_the_seed():
    images, masks = torch.rand(8, 3, 32, 32), torch.zeros(8, 1, 32, 32)
    a = augment_batch(images, masks, generator(1), "hsv")[0]
    b = augment_batch(images, masks, generator(1), "hsv")[0]
    c = augment_batch(images, masks, generator(2), "hsv")[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hue_rotation_keeps_grey_and_full_turn_is_identity():
    grey = torch.full((1, 3, 4, 4), 0.4)
    assert torch.allclose(hue_rotate(grey, torch.tensor([1.0])), grey, atol=1e-6)
    colour = torch.rand(2, 3, 4, 4) * 0.5 + 0.25
    assert torch.allclose(hue_rotate(colour, torch.tensor([2 * torch.pi] * 2)), colour, atol=1e-5)
