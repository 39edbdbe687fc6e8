"""Row-block upsampling + argmax (clipkit.pixelwise) decides every pixel as the full-volume computation does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipkit.pixelwise import bilinear_taps, label_pixels


def _reference(logits, size, n, threshold=None, min_cosine=None, scale=1.0):
    """What segment computed before: one [C, H, W] bilinear upsample, softmax, argmax."""
    up = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    probs = up.softmax(0)
    best, index = probs.max(0)
    labels = index + 1
    labels[index >= n] = 0
    if threshold is not None:
        labels[best < threshold] = 0
    if min_cosine is not None:
        labels[(up[:n] / scale).amax(0) < min_cosine] = 0
    return labels, probs[:n], best


@pytest.mark.parametrize(("h", "w", "H", "W"), [(12, 16, 97, 131), (96, 128, 400, 500), (40, 30, 17, 23),
                                                (8, 8, 8, 8)])
def test_taps_reproduce_torch_bilinear(h, w, H, W):
    x = torch.randn(3, h, w, generator=torch.Generator().manual_seed(h * W))
    j0, j1, lx = bilinear_taps(W, w)
    i0, i1, ly = bilinear_taps(H, h)
    cols = x[:, :, j0] * (1 - lx) + x[:, :, j1] * lx
    ours = cols[:, i0] * (1 - ly[:, None]) + cols[:, i1] * ly[:, None]
    ref = F.interpolate(x[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(ours, ref, atol=5e-5)  # float32 source coordinates: rounding differs by a few ulps


@pytest.mark.parametrize("block", [1, 7, 10**9])  # one row per block, ragged blocks, one block
def test_blocks_give_the_full_volume_decision(block):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 24, 32, generator=gen) * 4  # 4 labels + 2 background prompts
    size = (150, 170)
    ref, ref_probs, best = _reference(logits, size, 4, threshold=0.4, min_cosine=0.5, scale=2.0)
    out = label_pixels(logits, size, 4, threshold=0.4, min_cosine=0.5, cos_scale=2.0, keep_probs=True,
                       block_floats=block * 6 * size[1])
    assert (out.label_map != ref).float().mean() < 1e-4  # only float ties may differ
    assert torch.allclose(out.probs, ref_probs, atol=1e-5)
    for k in range(1, 5):  # each label's mean winning probability over its pixels
        inside = ref == k
        if inside.any():
            assert out.mean_scores[k - 1] == pytest.approx(float(best[inside].mean()), abs=1e-4)
        else:
            assert out.mean_scores[k - 1] != out.mean_scores[k - 1]  # NaN for an absent label


def test_no_probability_volume_unless_asked():
    out = label_pixels(torch.randn(3, 4, 4), (64, 64), 2)
    assert out.probs is None and out.label_map.shape == (64, 64)


@pytest.mark.parametrize(("min_cosine", "threshold"), [(None, None), (0.5, None), (None, 0.6), (0.5, 0.6)])
@pytest.mark.parametrize(("smooth", "size"), [(True, (150, 170)), (False, (97, 131)), (False, (17, 23))])
def test_cell_decisions_give_the_full_volume_labels(min_cosine, threshold, smooth, size):
    """Without --threshold or --scores, whole source cells are decided at the working resolution and only the
    cells where labels (or the cosine cut) disagree are blended: the label map must still be the full one's,
    on smooth logits (few edges), on noise (almost every cell an edge) and when downsampling."""
    gen = torch.Generator().manual_seed(11)
    if smooth:
        logits = F.interpolate(torch.randn(1, 6, 6, 8, generator=gen) * 4, size=(24, 32), mode="bilinear")[0]
    else:
        logits = torch.randn(6, 24, 32, generator=gen) * 4
    ref, _, best = _reference(logits, size, 4, threshold=threshold, min_cosine=min_cosine, scale=2.0)
    out = label_pixels(logits, size, 4, threshold=threshold, min_cosine=min_cosine, cos_scale=2.0)
    assert out.probs is None
    assert (out.label_map != ref).float().mean() < 1e-4  # only float ties may differ
    for k in range(1, 5):  # mean winning probability: exact on edges, blended inside decided cells
        inside = ref == k
        if inside.any():
            assert out.mean_scores[k - 1] == pytest.approx(float(best[inside].mean()), abs=0.02)
    small = label_pixels(logits, size, 4, threshold=threshold, min_cosine=min_cosine, cos_scale=2.0,
                         block_floats=7)  # edge chunks
    assert torch.equal(small.label_map, out.label_map)


@pytest.mark.parametrize(("smooth", "size"), [(True, (150, 170)), (False, (97, 131)), (False, (17, 23)),
                                              (True, (24, 32))])
def test_upsampled_argmax_is_the_full_volume_argmax(smooth, size):
    from clipkit.pixelwise import upsampled_argmax

    gen = torch.Generator().manual_seed(5)
    maps = torch.randn(1, 9, 6, 8, generator=gen) if smooth else torch.randn(1, 9, 24, 32, generator=gen)
    if smooth:
        maps = F.interpolate(maps, size=(24, 32), mode="bilinear")
    ref = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
    out = upsampled_argmax(maps[0], size)
    assert out.shape == ref.shape and out.dtype == torch.int32
    assert (out != ref).float().mean() < 1e-4  # float ties only
    assert torch.equal(upsampled_argmax(maps[0], size, block_floats=5), out)


def test_threshold_without_the_volume_is_the_full_decision():
    gen = torch.Generator().manual_seed(21)
    logits = torch.randn(5, 12, 16, generator=gen) * 2
    ref, _, _ = _reference(logits, (61, 83), 4, threshold=0.45)
    out = label_pixels(logits, (61, 83), 4, threshold=0.45)
    assert (out.label_map != ref).float().mean() < 1e-4 and (ref == 0).any() and (ref > 0).any()


def test_mean_score_inside_decided_cells_is_the_blend_of_the_corners():
    """One class wins every source pixel, so every cell is decided: the label's mean score must be the mean of
    the bilinearly resized source winning probabilities (the documented definition), summed in closed form."""
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 9, 13, generator=gen)
    logits[0] += 6 + torch.linspace(0, 3, 13)  # class 0 wins everywhere, by a margin that varies across the grid
    logits[1] += torch.linspace(0, 2, 9)[:, None]
    win = logits.softmax(0).amax(0)
    out = label_pixels(logits, (40, 57), 3)
    assert (out.label_map == 1).all()
    blended = F.interpolate(win[None, None], size=(40, 57), mode="bilinear", align_corners=False)
    assert out.mean_scores[0] == pytest.approx(float(blended.mean()), abs=1e-6)
