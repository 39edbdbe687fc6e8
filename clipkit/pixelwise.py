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

Without the probability volume (the default), even the blocks are skipped: a cell of the source grid whose four
corners share their arg-max class (and their side of the cosine cut, and clear the probability threshold) is
decided at the source resolution, and only the cells where labels meet are blended class by class
(:func:`_label_cells`): the same label map, 2-3x faster on a 500×400 image, and its time grows with the edges,
not with every class at every pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
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

    ``label_map``: integer (int64 or int32) ``[H, W]`` tensor, 0 = background, k = label k - 1 (of ``n_labels``).
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
    if not keep_probs and (h, w) != (H, W):
        return _label_cells(logits, size, n_labels, threshold, min_cosine, cos_scale, block_floats)
    if c * H * W <= block_floats or (h, w) == (H, W):  # one block: PyTorch's fused resize, from the source
        whole = logits if (h, w) == (H, W) else F.interpolate(logits[None], size=(H, W), mode="bilinear",
                                                                align_corners=False)[0]
        return _decide(whole, n_labels, threshold, min_cosine, cos_scale, keep_probs).finish()
    # columns first, natively (a resize to (h, W) leaves the rows as they are); then rows per block, each output
    # row a blend of two whole source rows (contiguous copies)
    cols = logits if w == W else F.interpolate(logits[None], size=(h, W), mode="bilinear", align_corners=False)[0]
    i0, i1, ly = bilinear_taps(H, h) if h != H else (None, None, None)
    rows = max(1, block_floats // max(1, c * W))
    parts = []
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        if i0 is None:
            block = cols[:, r0:r1]
        else:
            lam = ly[r0:r1, None]
            block = cols.index_select(1, i0[r0:r1]) * (1 - lam) + cols.index_select(1, i1[r0:r1]) * lam
        parts.append(_decide(block, n_labels, threshold, min_cosine, cos_scale, keep_probs))
    return _Partial.join(parts, n_labels).finish()


@dataclass
class _Partial:
    """The decision for a block of rows, with the sums its labels' mean scores need."""

    labels: torch.Tensor
    sums: torch.Tensor
    counts: torch.Tensor
    probs: torch.Tensor | None

    @staticmethod
    def join(parts: list[_Partial], n_labels: int) -> _Partial:
        probs = None if parts[0].probs is None else torch.cat([p.probs for p in parts], dim=1)  # type: ignore[misc]
        return _Partial(torch.cat([p.labels for p in parts]), sum(p.sums for p in parts),  # type: ignore[arg-type]
                        sum(p.counts for p in parts), probs)  # type: ignore[arg-type]

    def finish(self) -> PixelLabels:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (self.sums / self.counts).numpy()[1:]
        return PixelLabels(self.labels, means, self.probs)


def _decide(block: torch.Tensor, n_labels: int, threshold: float | None, min_cosine: float | None,
            cos_scale: float, keep_probs: bool) -> _Partial:
    """Softmax + argmax over the classes of ``block`` (``[C, rows, W]`` float32)."""
    top, index = block.max(dim=0)  # the softmax's arg-max is the logits' arg-max
    exp = (block - top).exp_()
    total = exp.sum(dim=0)
    best = total.reciprocal()  # the winning probability, exp(0) / Σ exp
    labels = index.add(1).masked_fill_(index >= n_labels, 0)  # a background prompt won: 0
    if threshold is not None:
        labels.masked_fill_(best < threshold, 0)
    if min_cosine is not None:
        # where a label won, ``top`` is the best label logit; where a background prompt won, the pixel is 0 already
        labels.masked_fill_(top / cos_scale < min_cosine, 0)
    flat = labels.flatten()
    sums = torch.bincount(flat, weights=best.flatten().double(), minlength=n_labels + 1)
    counts = torch.bincount(flat, minlength=n_labels + 1).double()
    probs = exp[:n_labels] / total if keep_probs else None
    return _Partial(labels, sums, counts, probs)



def _corners(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The four corners of every source cell ``(i, j)``: ``t[i, j], t[i, j+1], t[i+1, j], t[i+1, j+1]``, the
    last row and column clamped as :func:`bilinear_taps` clamps them. Each ``[h, w]``."""
    right = torch.cat([t[:, 1:], t[:, -1:]], dim=1)
    return t, right, torch.cat([t[1:], t[-1:]], dim=0), torch.cat([right[1:], right[-1:]], dim=0)


def _label_cells(logits: torch.Tensor, size: tuple[int, int], n_labels: int, threshold: float | None,
                 min_cosine: float | None, cos_scale: float, block_floats: int) -> PixelLabels:
    """The same label map as the full computation, deciding whole cells of the source grid at once.

    An output pixel is a convex blend of the four corners of its source cell (:func:`bilinear_taps`). Where
    the four corners share their arg-max class, that class wins every blend inside the cell (it is at least
    every other class at each corner, hence in every blend), and where the corners' best logits are all on
    the same side of the ``min_cosine`` cut, so is every blend of them; where the corners' winning probabilities
    all reach ``threshold``, so does every blend's (the probability of a blend is at least the corners'
    smallest). Such a cell is decided at the source
    resolution and its label copied to its pixels; only the cells where labels meet (a few per cent) get all
    ``C`` blended logits per pixel. Labels equal the full computation's (float ties aside); no
    ``[C, H, W]`` volume and no full-size float map is formed.

    The mean winning probability (``mean_scores``) is exact on those edge pixels; inside a decided cell it is
    the blend of the corners' winning probabilities, summed over the cell's pixels in closed form (the blend
    weights are separable). That differs from the softmax of the blended logits by a second-order term
    (|Δ| ≤ 0.01 on the shapes world's scenes).
    """
    h, w = logits.shape[1:]
    H, W = size
    top, arg = logits.max(dim=0)  # [h, w] at the working resolution
    win = (logits - top).exp_().sum(dim=0).reciprocal()  # each source pixel's winning probability
    label = torch.where(arg < n_labels, arg + 1, 0)  # a background prompt's class is label 0
    a = _corners(arg)
    decided = (a[0] == a[1]) & (a[0] == a[2]) & (a[0] == a[3])
    if min_cosine is not None:
        k = _corners(top / cos_scale >= min_cosine)
        kept, cut = k[0] & k[1] & k[2] & k[3], ~(k[0] | k[1] | k[2] | k[3])
        decided &= kept | cut
        label = label.masked_fill(cut, 0)
    if threshold is not None:
        # the winning probability of a blend is at least the smallest of the corners' (1/p is Σ exp of blended
        # logit gaps, and exp is convex): corners all at or above the threshold keep the cell's label; a cell with
        # a corner below it is blended pixel by pixel
        sure = _corners(win >= threshold)
        decided &= sure[0] & sure[1] & sure[2] & sure[3]
    r0, r1, ly = bilinear_taps(H, h)
    c0, c1, lx = bilinear_taps(W, w)
    code = torch.where(decided, label, -1).to(torch.int32)
    labels = code.view(-1).index_select(0, _source_cells(r0, c0, w)).view(H, W)  # -1 on undecided cells' pixels

    # decided cells: Σ over a cell's pixels of the blended probability, with the blend weights summed per row
    # and per column of the cell (separable)
    row0 = torch.zeros(h).index_add_(0, r0, 1 - ly)
    row1 = torch.zeros(h).index_add_(0, r0, ly)
    col0 = torch.zeros(w).index_add_(0, c0, 1 - lx)
    col1 = torch.zeros(w).index_add_(0, c0, lx)
    p = _corners(win)
    cell_sum = (p[0] * col0 + p[1] * col1) * row0[:, None] + (p[2] * col0 + p[3] * col1) * row1[:, None]
    cell_pixels = torch.bincount(r0, minlength=h)[:, None] * torch.bincount(c0, minlength=w)
    which = label[decided]
    sums = torch.bincount(which, weights=cell_sum[decided].double(), minlength=n_labels + 1)
    counts = torch.bincount(which, weights=cell_pixels[decided].double(), minlength=n_labels + 1)

    # undecided cells: every pixel's C blended logits, a bounded number of classes × pixels at a time
    for at, z in _edge_blends(logits, labels, (r0, r1, ly), (c0, c1, lx), block_floats):
        z_top, z_arg = z.max(dim=1)
        got = torch.where(z_arg < n_labels, z_arg + 1, 0)
        if min_cosine is not None:
            got.masked_fill_(z_top / cos_scale < min_cosine, 0)
        best = (z - z_top[:, None]).exp_().sum(dim=1).reciprocal()
        if threshold is not None:
            got.masked_fill_(best < threshold, 0)
        labels.view(-1).index_copy_(0, at, got.to(torch.int32))
        sums += torch.bincount(got, weights=best.double(), minlength=n_labels + 1)
        counts += torch.bincount(got, minlength=n_labels + 1).double()
    return _Partial(labels, sums, counts, None).finish()


Taps = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _source_cells(r0: torch.Tensor, c0: torch.Tensor, w: int) -> torch.Tensor:
    """Each output pixel's source cell as a flat index ``i * w + j`` (int64 ``[H·W]``), from the taps' first
    indices: one flat gather copies a per-cell ``[h, w]`` map to ``[H, W]`` (5x faster than two 2-D ones)."""
    return (r0[:, None] * w + c0).view(-1)


def _edge_blends(maps: torch.Tensor, code: torch.Tensor, rows: Taps, cols: Taps,
                 block_floats: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(flat pixel indices [n], blended maps [n, C])`` for the pixels where ``code`` (CPU ``[H, W]``) is
    negative, in chunks of at most ``block_floats`` blended floats (the shared column blends of a chunk are at
    most twice that); each pixel blends its four source values as ``F.interpolate`` does, term by term
    (columns, then rows), so the values are bit for bit its own."""
    c, h, w = maps.shape
    W = code.shape[1]
    (r0, r1, ly), (c0, c1, lx) = rows, cols
    edge = torch.from_numpy(np.flatnonzero(code.numpy() < 0))  # numpy's is 7x torch's nonzero here
    # pixel-major, so a corner's C values gather as one row (a strided gather per class is 5x slower)
    pixels = maps.permute(1, 2, 0).reshape(h * w, c).contiguous()
    step = max(1, block_floats // max(1, c))
    for s0 in range(0, len(edge), step):
        at = edge[s0:s0 + step]
        y, x = at // W, at % W
        # the column blend of (source row, output column) serves every output row of the cell: blend each needed
        # pair once, then each pixel blends its two rows
        top, bottom = r0.index_select(0, y) * W + x, r1.index_select(0, y) * W + x  # pairs, as r * W + X
        needed = np.zeros(h * W, dtype=bool)
        needed[top.numpy()] = needed[bottom.numpy()] = True
        pairs = torch.from_numpy(np.flatnonzero(needed))
        slot = torch.empty(h * W, dtype=torch.int64).index_copy_(0, pairs, torch.arange(len(pairs)))
        px, source_row = pairs % W, (pairs // W) * w
        wx = lx.index_select(0, px)[:, None]
        columns = (pixels.index_select(0, source_row + c0.index_select(0, px)) * (1 - wx)
                   + pixels.index_select(0, source_row + c1.index_select(0, px)) * wx)  # [pairs, C]
        wy = ly.index_select(0, y)[:, None]
        yield at, (columns.index_select(0, slot.index_select(0, top)) * (1 - wy)
                   + columns.index_select(0, slot.index_select(0, bottom)) * wy)


def upsampled_argmax(maps: torch.Tensor, size: tuple[int, int], *, block_floats: int = BLOCK_FLOATS) -> torch.Tensor:
    """``argmax(F.interpolate(maps, size, bilinear), dim=0)`` without the ``[C, H, W]`` upsampled volume.

    ``maps``: float ``[C, h, w]`` on any device; ``size``: ``(H, W)``. Returns int32 ``[H, W]`` on the CPU.
    Cells of the source grid whose four corners share their arg-max keep it (see :func:`_label_cells`); only
    the pixels of the other cells are blended class by class. The same indices as the full computation,
    float ties aside.
    """
    maps = maps.float().cpu()
    h, w = maps.shape[1:]
    H, W = size
    arg = maps.max(dim=0).indices.to(torch.int32)  # int32: half the bytes through the full-size gathers
    if (h, w) == (H, W):
        return arg
    a = _corners(arg)
    decided = (a[0] == a[1]) & (a[0] == a[2]) & (a[0] == a[3])
    rows, cols = bilinear_taps(H, h), bilinear_taps(W, w)
    index = torch.where(decided, arg, -1).view(-1).index_select(0, _source_cells(rows[0], cols[0], w)).view(H, W)
    for at, z in _edge_blends(maps, index, rows, cols, block_floats):
        index.view(-1).index_copy_(0, at, z.max(dim=1).indices.to(torch.int32))
    return index
