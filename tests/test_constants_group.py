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


def test_outputs_besides_the_label_map():
    """``image_scores`` is the image-level softmax of ``scale · cos``; ``group_label`` is 1-based with 0 for a
    group no pixel belongs to; ``group_maps`` is each stage's arg-max group (int32)."""
    text = torch.eye(3)
    image = F.normalize(torch.tensor([1.0, 0.5, 0.0]), dim=0)
    groups = F.normalize(torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0]]), dim=-1)
    maps = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]).reshape(1, 3, 1, 2)]  # group 2 owns no pixel
    seg = label_groups(maps, groups, image, text, 10.0, bg_thresh=None, topk=3)
    expected = torch.softmax(10.0 * image, dim=0)
    np.testing.assert_allclose(seg.image_scores, expected.numpy(), rtol=1e-5)
    assert seg.group_label.tolist() == [1, 2, 0]
    assert seg.label_map.tolist() == [[1, 2]]
    assert len(seg.group_maps) == 1 and seg.group_maps[0].dtype == np.int32
    assert seg.group_maps[0].tolist() == [[0, 1]]


def test_best_group_is_never_background():
    """The threshold is ``min(bg_thresh, best group score)``: the best group keeps its label even when its
    score is below ``bg_thresh``, the others fall to background."""
    text = torch.eye(2)
    groups = F.normalize(torch.tensor([[1.0, 0.8], [0.9, 1.0]]), dim=-1)
    image = F.normalize(torch.ones(2), dim=0)
    seg = label_groups(_maps(2), groups, image, text, 10.0, bg_thresh=0.99)
    assert float(seg.group_score.max()) < 0.99
    best = int(seg.group_score.argmax())
    assert seg.group_label[best] != 0 and seg.group_label[1 - best] == 0


def test_many_labels_give_a_wide_label_map():
    n = 300
    text = torch.eye(n)
    groups = text[[0, 299]]
    image = F.normalize(text[0] + text[299], dim=0)
    seg = label_groups(_maps(2), groups, image, text, 100.0, bg_thresh=None)
    assert seg.label_map.dtype == np.uint16 and seg.label_map.tolist() == [[1, 300]]


def test_preprocess_resizes_the_short_side_to_patch_multiples_and_normalises():
    from types import SimpleNamespace

    from clipkit.groupvit.config import IMAGENET_MEAN, IMAGENET_STD
    from clipkit.groupvit.segment import preprocess

    cfg = SimpleNamespace(vision=SimpleNamespace(image_size=32, patch_size=4), image_mean=IMAGENET_MEAN,
                          image_std=IMAGENET_STD)
    from PIL import Image

    x = preprocess(Image.new("RGB", (41, 20), (255, 0, 0)), SimpleNamespace(cfg=cfg))
    # short side 20 -> 32 (scale 1.6); long side 41 * 1.6 = 65.6 -> nearest multiple of 4 = 64
    assert x.shape == (1, 3, 32, 64) and x.dtype == torch.float32
    expected = [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                -IMAGENET_MEAN[2] / IMAGENET_STD[2]]
    torch.testing.assert_close(x[0, :, 16, 32], torch.tensor(expected), rtol=0, atol=1e-5)
    assert preprocess(Image.new("RGB", (41, 20)), SimpleNamespace(cfg=cfg), short_side=8).shape == (1, 3, 8, 16)
    grey = preprocess(Image.new("L", (20, 20), 255), SimpleNamespace(cfg=cfg))  # any mode becomes RGB
    assert grey.shape == (1, 3, 32, 32)


def test_purity_hand_cases():
    from clipkit.groupvit.segment import purity

    assert purity(np.array([[3]]), np.array([[5]])) == (1.0, 1.0)
    # group 0 holds labels (1, 1, 2), group 1 holds (2): 3 of 4 pixels agree with their group's majority
    assert purity(np.array([[0, 0, 0, 1]]), np.array([[1, 1, 2, 2]])) == (0.75, 4.0)
