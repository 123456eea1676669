"""The one effort measure, on hand-made masks."""
from __future__ import annotations

import numpy as np

from annotassist.effort import Effort, correction_effort, drawing_effort, labeled_pixels


def test_changed_pixels_and_regions_of_a_hand_made_pair():
    truth = np.zeros((10, 10), np.uint8)
    pre = truth.copy()
    pre[0:2, 0:2] = 1  # one blob of 4 wrong pixels
    pre[7, 7] = 2  # another region
    pre[8, 8] = 2  # touches (7, 7) diagonally: the same region (8-connectivity)
    truth[9, 0] = 255  # the dataset labels nothing here
    pre[9, 0] = 3
    assert correction_effort(pre, truth) == Effort(7, 3)  # everything that differs, ignore included
    assert correction_effort(pre, truth, labeled_pixels(truth)) == Effort(6, 2)  # ignore costs nothing
    assert correction_effort(truth, truth) == Effort(0, 0)


def test_reviewed_limits_the_count_to_the_regions_asked_about():
    pre = np.zeros((6, 6), np.uint8)
    after = np.ones((6, 6), np.uint8)
    reviewed = np.zeros((6, 6), bool)
    reviewed[:2, :3] = True
    assert correction_effort(pre, after, reviewed) == Effort(6, 1)


def test_drawing_from_scratch_costs_every_labeled_pixel():
    mask = np.full((8, 8), 255, np.uint8)
    mask[:3, :3] = 1
    mask[5:, 5:] = 2
    assert drawing_effort(mask) == Effort(18, 2)
    assert drawing_effort(np.full((4, 4), 255, np.uint8)) == Effort(0, 0)
