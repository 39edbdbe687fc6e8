"""Per-pixel decisions from low-resolution logits without a full-resolution ``[classes, H, W]`` volume.

The dense methods compute logits at their working resolution (the model's window, e.g. 96 or 224 px on the short
side) and, as their official code does (mmseg resizes ``seg_logits`` to the original shape before the argmax),
upsample them bilinearly to the image's size before softmax and argmax. Done in one call that costs
``classes × H × W`` floats: 3.4 GB for one 500×400 image with 1,000 labels, 8 GB for a 12-MP photo with 48.
Here the same numbers come out of blocks of rows: :func:`bilinear_taps` gives, per output row or column, the two
source indices and weights ``F.interpolate(mode="bilinear", align_corners=False)`` uses; the columns are
interpolated once (``F.interpolate`` to ``[C, h, W]``, small), then each block of output rows blends two source
rows, so memory is ``O(H·W + C·block·W)``; when the whole volume fits one block, PyTorch's own resize does both
passes (faster). The blend follows PyTorch's kernel (columns, then rows, float32 source coordinates); values
agree with ``F.interpolate`` to about 1e-5 (rounding of the coordinates), so only exact ties can be decided
differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Floats per row block (about 64 MB as float32): rows per block = this // (classes × W).
BLOCK_FLOATS = 16 * 2**20


def bilinear_taps(out_size: int, in_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices ``i0, i1`` (int64 ``[out_size]``) and weight ``lam`` (float32 ``[out_size]``) such that
    ``out[d] = (1 - lam[d]) · in[i0[d]] + lam[d] · in[i1[d]]`` along one axis, as PyTorch's bilinear resize
    with ``align_corners=False`` and no antialiasing (half-pixel centres, source clamped at 0 and the last
    index)."""
    scale = in_size / out_size
    # float32 arithmetic, as the kernel does it (float64 here moves some weights by ~1e-5)
    src = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * torch.tensor(scale, dtype=torch.float32)
           - 0.5).clamp(min=0.0)
    i0 = src.floor().long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    return i0, i1, src - i0.float()


@dataclass
class PixelLabels:
    """The per-pixel decision for one image.

    ``label_map``: int64 ``[H, W]`` tensor, 0 = background, k = label k - 1 (of ``n_labels``).
    ``mean_scores``: float64 ``[n_labels]`` mean winning probability over each label's pixels (NaN if absent).
    ``probs``: float32 ``[n_labels, H, W]`` per-label probabilities, only when asked for (else None).
    """

    label_map: torch.Tensor
    mean_scores: np.ndarray
    probs: torch.Tensor | None = None


def label_pixels(logits: torch.Tensor, size: tuple[int, int], n_labels: int, *,
                 threshold: float | None = None, min_cosine: float | None = None, cos_scale: float = 1.0,
                 keep_probs: bool = False, block_floats: int = BLOCK_FLOATS) -> PixelLabels:
    """Softmax + argmax at ``size`` from logits at any resolution, row block by row block.

    Args:
        logits: float ``[C, h, w]``, the first ``n_labels`` channels labels, the rest background prompts
            (a pixel won by one of those is background).
        size: ``(H, W)`` of the output (the image's size).
        threshold: pixels whose best probability is below it become background (ClearCLIP's ``prob_thd``).
        min_cosine: pixels whose best label cosine ``logit / cos_scale`` is below it become background.
        keep_probs: also return the full ``[n_labels, H, W]`` probability volume (the one O(labels·H·W) output;
            ``segment --scores`` asks for it).
    """
    logits = logits.float()
    c, h, w = logits.shape
    H, W = size
    # columns first, natively (a resize to (h, W) leaves the rows as they are); then rows per block, each output
    # row a blend of two whole source rows (contiguous copies)
    cols = logits if w == W else F.interpolate(logits[None], size=(h, W), mode="bilinear", align_corners=False)[0]
    i0, i1, ly = bilinear_taps(H, h) if h != H else (None, None, None)
    if i0 is not None and c * H * W <= block_floats:  # one block: PyTorch's fused kernel, 2-3x faster
        cols = F.interpolate(cols[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        i0 = None
    label_map = torch.zeros((H, W), dtype=torch.int64)
    sums = torch.zeros(n_labels + 1, dtype=torch.float64)
    counts = torch.zeros(n_labels + 1, dtype=torch.float64)
    probs_out = torch.empty((n_labels, H, W), dtype=torch.float32) if keep_probs else None
    rows = max(1, block_floats // max(1, c * W))
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        if i0 is None:
            block = cols[:, r0:r1]
        else:
            lam = ly[r0:r1, None]
            block = cols.index_select(1, i0[r0:r1]) * (1 - lam) + cols.index_select(1, i1[r0:r1]) * lam
        top, index = block.max(dim=0)  # the softmax's arg-max is the logits' arg-max
        exp = (block - top).exp_()
        total = exp.sum(dim=0)
        best = total.reciprocal()  # the winning probability, exp(0) / Σ exp
        labels = index + 1
        labels[index >= n_labels] = 0  # a background prompt won
        if threshold is not None:
            labels[best < threshold] = 0
        if min_cosine is not None:
            labels[block[:n_labels].amax(dim=0) / cos_scale < min_cosine] = 0
        label_map[r0:r1] = labels
        flat = labels.flatten()
        sums += torch.bincount(flat, weights=best.flatten().double(), minlength=n_labels + 1)
        counts += torch.bincount(flat, minlength=n_labels + 1).double()
        if probs_out is not None:
            probs_out[:, r0:r1] = exp[:n_labels] / total
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts).numpy()[1:]
    return PixelLabels(label_map, means, probs_out)
