import numpy as np
import pytest

from cosas_tutorial.evaluate import dice_iou, image_scores


def masks(*rows):
    return np.array(rows, dtype=bool)


def test_dice_and_iou_against_hand_counts():
    prediction = masks([1, 1, 0, 0], [1, 0, 0, 0])  # 3 pixels
    target = masks([1, 0, 0, 0], [1, 1, 1, 0])  # 4 pixels, 2 shared
    dice, iou = dice_iou(prediction, target)
    assert dice == pytest.approx(2 * 2 / (3 + 4))
    assert iou == pytest.approx(2 / 5)
    assert image_scores(prediction, target)["score"] == pytest.approx((4 / 7 + 2 / 5) / 2)


def test_perfect_and_disjoint():
    target = masks([0, 1], [1, 1])
    assert dice_iou(target, target) == (1.0, 1.0)
    assert dice_iou(~target, target) == (0.0, 0.0)


def test_empty_mask_conventions():
    empty = np.zeros((4, 4), bool)
    some = empty.copy()
    some[0, 0] = True
    assert dice_iou(empty, empty) == (1.0, 1.0)  # nothing to find, nothing found
    assert dice_iou(some, empty) == (0.0, 0.0)  # false alarm on a tumour-free tile
    assert dice_iou(empty, some) == (0.0, 0.0)  # missed tumour


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        dice_iou(np.zeros((2, 2)), np.zeros((2, 3)))
