"""GroupViT segmentation constants pinned by behaviour (``label_groups`` at its defaults): the background
threshold 0.95 (capped by the best group score) and the image-level top-5 class mask of NVlabs'
``group_vit_seg.py``. Expected labels follow from the official formula, evaluated in the test.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from clipkit.groupvit.segment import label_groups


def _maps(groups: int) -> list[torch.Tensor]:
    """One-hot maps: a 1×``groups`` image whose pixel ``g`` belongs to group ``g``."""
    return [torch.eye(groups).reshape(1, groups, 1, groups)]


def _at_angle(delta: float) -> torch.Tensor:
    """A unit vector in the plane of e0, e1 with cos(·, e0) − cos(·, e1) = ``delta``."""
    theta = math.acos(delta / math.sqrt(2)) - math.pi / 4
    return torch.tensor([math.cos(theta), math.sin(theta)])


def test_default_background_threshold_is_0_95():
    """Two labels, scale 100: with both labels kept, a group's score for its best label is p², p = σ(100·Δ).
    Group 0 scores 0.99² = 0.980 (above 0.95), group 1 scores 0.965² = 0.931: background at 0.95, a label at
    0.9 — and the cap min(0.95, best score) does not bind because the best score is above 0.95."""
    text = torch.eye(2)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    groups = torch.stack([_at_angle(logit(0.99) / 100), _at_angle(logit(0.965) / 100)])
    image = F.normalize(text.sum(0), dim=0)
    seg = label_groups(_maps(2), groups, image, text, 100.0)
    np.testing.assert_allclose(seg.group_score, [0.99**2, 0.965**2], rtol=1e-4)
    assert seg.label_map.tolist() == [[1, 0]]
    assert label_groups(_maps(2), groups, image, text, 100.0, bg_thresh=0.9).label_map.tolist() == [[1, 1]]


def test_default_image_level_mask_keeps_the_top_5_classes():
    """Seven labels ranked 1…7 by the image embedding; group g points at label g. At the default top-5 only
    the groups of labels 1–5 keep their own label; groups 6 and 7 are pushed onto a kept label."""
    n = 7
    text = torch.eye(n)
    image = F.normalize(torch.linspace(1.0, 0.4, n), dim=0)  # image-level ranking: label 0 first
    groups = F.normalize(torch.eye(n) + 0.05, dim=-1)
    seg = label_groups(_maps(n), groups, image, text, 10.0, bg_thresh=None)
    labels = seg.label_map[0].tolist()
    assert labels[:5] == [1, 2, 3, 4, 5]
    assert all(1 <= v <= 5 for v in labels[5:])
    six = label_groups(_maps(n), groups, image, text, 10.0, bg_thresh=None, topk=6).label_map[0].tolist()
    assert six[5] == 6  # the mask, not the scores, is what moved group 6
