"""The official GroupViT labelling rule, stage maps, purity and the training-free fallback grouping."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit.groupvit.fallback import group_patches, stage_maps_from
from clipkit.groupvit.segment import label_groups, purity, stage_maps


def _layout(h: int = 32, w: int = 32) -> np.ndarray:
    """Three regions: background (0), a left square (1), a right square (2)."""
    lay = np.zeros((h, w), np.int64)
    lay[h // 4 : 3 * h // 4, w // 16 : 7 * w // 16] = 1
    lay[h // 4 : 3 * h // 4, 9 * w // 16 : 15 * w // 16] = 2
    return lay


def _one_hot_maps(layout: np.ndarray, groups: int) -> list[torch.Tensor]:
    m = F.one_hot(torch.from_numpy(layout.astype(np.int64)), groups).permute(2, 0, 1).float()[None]
    return [m]


def test_rule_names_groups_and_leaves_unmatched_group_as_background():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(4, 16), dim=-1)  # labels: a, b, c, d
    bg = F.normalize(text.sum(dim=0), dim=-1)  # equally close to every label: no label stands out
    groups = torch.stack([bg, text[2], text[0]])  # group 0 = background-ish, group 1 = "c", group 2 = "a"
    image = F.normalize(text[0] + text[2], dim=-1)
    layout = _layout()
    seg = label_groups(_one_hot_maps(layout, 3), groups, image, text, 100.0, bg_thresh=0.5, topk=2,
                       keep_scores=True)
    assert seg.label_map.shape == layout.shape and seg.label_map.dtype == np.uint8
    assert (seg.label_map[layout == 1] == 3).all()  # "c" is label 3 (1-based)
    assert (seg.label_map[layout == 2] == 1).all()
    assert (seg.label_map[layout == 0] == 0).all()  # spread-out scores fall under the threshold
    assert seg.group_label.tolist() == [0, 3, 1]
    assert seg.scores.shape == (4, 32, 32)


def test_rule_keeps_only_image_top_k_classes():
    torch.manual_seed(1)
    text = F.normalize(torch.randn(3, 16), dim=-1)
    groups = torch.stack([text[1], text[1]])
    image = text[2]  # the image-level top-1 is "label 3": the group's own best label is masked out
    seg = label_groups(_one_hot_maps(_layout() > 0, 2), groups, image, text, 10.0, bg_thresh=None, topk=1,
                       keep_scores=True)
    assert set(np.unique(seg.label_map)) == {3}
    assert seg.scores[[0, 1]].max() == 0.0


def test_background_threshold_never_exceeds_best_group_score():
    """Official detail: the threshold is min(bg_thresh, best group score), so some group always survives."""
    torch.manual_seed(2)
    text = F.normalize(torch.randn(5, 16), dim=-1)
    groups = F.normalize(torch.randn(2, 16), dim=-1)
    seg = label_groups(_one_hot_maps(_layout() > 0, 2), groups, groups.mean(0), text, 10.0, bg_thresh=0.99)
    assert (seg.label_map > 0).any()


def test_stage_maps_are_products_of_soft_assignments():
    torch.manual_seed(3)
    a1 = torch.rand(1, 6, 16).softmax(dim=1)  # [B, G1, N] columns sum to 1 over groups
    a2 = torch.rand(1, 3, 6).softmax(dim=1)

    out = SimpleNamespace(soft=[a1, a2], grid=(4, 4))
    maps = stage_maps(out, (4, 4))
    assert [m.shape for m in maps] == [(1, 6, 4, 4), (1, 3, 4, 4)]
    expected = (a1.transpose(1, 2) @ a2.transpose(1, 2)).transpose(1, 2).reshape(1, 3, 4, 4)
    torch.testing.assert_close(maps[1], expected)
    torch.testing.assert_close(maps[1].sum(dim=1), torch.ones(1, 4, 4))
    up = stage_maps(out, (8, 8))[1]
    torch.testing.assert_close(up.sum(dim=1), torch.ones(1, 8, 8))


def test_purity():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    assert purity(np.array([[0, 0, 1, 1], [0, 0, 1, 1]]), gt)[0] == 1.0
    assert purity(np.zeros((2, 4), np.int64), gt)[0] == 0.5
    assert purity(np.array([[0, 0, 0, 1], [0, 0, 0, 1]]), gt)[0] == 0.75


def test_fallback_groups_separate_regions_of_distinct_features():
    torch.manual_seed(4)
    layout = _layout(16, 16)
    dirs = F.normalize(torch.randn(3, 32), dim=-1)
    feats = dirs[torch.from_numpy(layout)] + 0.05 * torch.randn(16, 16, 32)
    soft, emb = group_patches(F.normalize(feats, dim=-1), (16, 4))
    assert soft[0].shape == (16, 256) and soft[1].shape == (4, 16) and emb.shape == (4, 32)
    torch.testing.assert_close(soft[0].sum(dim=0), torch.ones(256))
    maps = stage_maps_from(soft, (16, 16), (32, 32))
    final = maps[-1][0].argmax(dim=0).numpy()
    gt = np.kron(layout, np.ones((2, 2), np.int64))
    assert purity(final, gt)[0] > 0.95
    assert purity(maps[0][0].argmax(dim=0).numpy(), gt)[0] > 0.95
    # each region's group embedding points at that region's feature direction
    for r in range(3):
        g = np.bincount(final[gt == r]).argmax()
        assert float(emb[g] @ dirs[r]) > 0.9
    # stage 1 has more, smaller groups than stage 2
    assert len(np.unique(maps[0][0].argmax(dim=0))) > len(np.unique(final))


def _random_grid_outputs(seed: int) -> tuple[SimpleNamespace, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder outputs of a 5x7 patch grid (6 then 3 groups), with group, image and 4 label embeddings."""
    gen = torch.Generator().manual_seed(seed)
    soft = [torch.rand(1, 6, 35, generator=gen).softmax(1), torch.rand(1, 3, 6, generator=gen).softmax(1)]
    out = SimpleNamespace(soft=soft, grid=(5, 7))
    groups = F.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    image = F.normalize(torch.randn(8, generator=gen), dim=0)
    text = F.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    return out, groups, image, text


def test_grid_maps_with_a_size_decide_as_the_resized_maps():
    """label_groups on patch-grid maps with ``size=`` (the upsampled arg-max, no full-size maps) gives the group
    maps, labels and scores of label_groups on the bilinearly resized maps; one int32 map per stage."""
    out, groups, image, text = _random_grid_outputs(3)
    full = label_groups(stage_maps(out, (37, 51)), groups, image, text, 20.0, bg_thresh=None, keep_scores=True)
    grid = label_groups(stage_maps(out, None), groups, image, text, 20.0, bg_thresh=None, size=(37, 51),
                        keep_scores=True)
    assert len(grid.group_maps) == 2 and all(m.dtype == np.int32 and m.shape == (37, 51) for m in grid.group_maps)
    for a, b in zip(full.group_maps, grid.group_maps, strict=True):
        assert (a != b).mean() < 1e-3  # float ties only
    assert (full.label_map != grid.label_map).mean() < 1e-3
    np.testing.assert_allclose(grid.scores, full.scores, atol=1e-6)


def test_mean_scores_are_the_kept_scores_averaged_and_scores_are_formed_only_when_asked():
    """Without ``keep_scores`` no ``[N, H, W]`` volume is formed; each label's mean score (what the JSON reports)
    is then the groups' scores weighted by their pixels, the same as averaging the kept per-pixel scores."""
    out, groups, image, text = _random_grid_outputs(4)
    args = (stage_maps(out, None), groups, image, text, 20.0)
    kept = label_groups(*args, bg_thresh=0.2, size=(37, 51), keep_scores=True)
    lean = label_groups(*args, bg_thresh=0.2, size=(37, 51))
    assert lean.scores is None
    np.testing.assert_array_equal(lean.label_map, kept.label_map)
    present = [k for k in range(1, 5) if (kept.label_map == k).any()]
    assert len(present) >= 2  # the check below compares more than one label
    for k in range(1, 5):
        inside = kept.label_map == k
        if inside.any():
            assert lean.mean_scores[k - 1] == pytest.approx(float(kept.scores[k - 1][inside].mean()), rel=1e-6)
        else:
            assert np.isnan(lean.mean_scores[k - 1])
