"""Sliding-window GroupViT inference (the official evaluation's mmseg ``slide`` mode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_groupvit

from clipkit.groupvit.segment import GroupSegmentation, segment
from clipkit.groupvit.slide import WindowSegmentation, merge_windows, segment_slide, window_corners


@pytest.fixture(scope="module")
def model():
    return tiny_groupvit()


def test_window_corners_follow_mmseg():
    assert window_corners(448, 448, 224, 112) == [(y, x) for y in (0, 112, 224) for x in (0, 112, 224)]
    # the last window is shifted back inside the image (VOC-like 448 x 600 with the official 448 / 224)
    assert window_corners(448, 600, 448, 224) == [(0, 0), (0, 152)]
    assert window_corners(100, 80, 224, 112) == [(0, 0)]  # smaller than a window: the whole image
    with pytest.raises(ValueError):
        window_corners(10, 10, 0, 4)


def test_one_window_covering_the_image_is_the_whole_image_rule(model):
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, 32, 48)
    text = F.normalize(torch.randn(5, 16), dim=-1)
    whole = segment(model, pixels, text, (64, 96), bg_thresh=0.3, topk=3, keep_scores=True)
    slid = segment_slide(model, pixels, text, (64, 96), window=48, stride=24, bg_thresh=0.3, topk=3)
    np.testing.assert_array_equal(slid.label_map, whole.label_map)
    np.testing.assert_allclose(slid.scores, whole.scores, atol=1e-5)
    np.testing.assert_array_equal(slid.group_label, whole.group_label)


def test_several_windows_cover_every_pixel(model):
    torch.manual_seed(2)
    pixels = torch.randn(1, 3, 32, 64)
    text = F.normalize(torch.randn(3, 16), dim=-1)
    seg = segment_slide(model, pixels, text, (32, 64), window=32, stride=16, bg_thresh=None)
    assert seg.label_map.shape == (32, 64) and seg.label_map.min() >= 1  # no background without a threshold
    assert seg.scores.shape == (3, 32, 64)
    final = seg.group_maps[-1]
    assert final.shape == (32, 64)
    assert len(seg.group_label) == 3 * 4  # three windows of four final groups
    assert int(final.max()) < len(seg.group_label)
    assert len(np.unique(final // 4)) == 3  # every window owns the pixels nearest its centre


def _window(y: int, x: int, columns: list[tuple[int, float]], n: int = 3) -> WindowSegmentation:
    """A 4-row window whose column j is group j naming label ``columns[j][0]`` (1-based) with that score."""
    w = len(columns)
    scores = np.zeros((n, 4, w), np.float32)
    for j, (label, score) in enumerate(columns):
        scores[label - 1, :, j] = score
    seg = GroupSegmentation(label_map=np.zeros((4, w), np.uint8), scores=scores,
                            group_maps=[np.tile(np.arange(w, dtype=np.int32), (4, 1))],
                            group_label=np.array([lb for lb, _ in columns]),
                            group_score=np.array([sc for _, sc in columns], np.float32),
                            image_scores=np.zeros(n, np.float32))
    return WindowSegmentation(y, x, seg)


def test_overlaps_average_scores_and_background_votes():
    left = _window(0, 0, [(1, 0.9)] * 4)
    right = _window(0, 2, [(2, 0.6), (2, 0.6), (3, 0.2), (3, 0.2)])  # columns 2-3 are shared with `left`
    seg = merge_windows([left, right], (4, 6), (4, 6), bg_thresh=None)
    assert seg.label_map[0].tolist() == [1, 1, 1, 1, 3, 3]  # shared: 0.45 for label 1 against 0.30
    # the official rule inside each window: background below min(0.95, the window's best group score 0.6)
    seg = merge_windows([left, right], (4, 6), (4, 6), bg_thresh=0.95)
    assert seg.label_map[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert seg.group_label.tolist() == [1, 1, 1, 1, 2, 2, 0, 0]  # windows' groups, thresholded in their window
    # each pixel shows the groups of the nearest window centre (x = 2 and 4; the tie at 3 goes to the first)
    assert seg.group_maps[0][0].tolist() == [0, 1, 2, 3, 4 + 2, 4 + 3]
