"""Training-free two-stage grouping for CLIP models without group tokens (a documented deviation).

GroupViT learns its grouping; a plain open_clip model has none. To still answer ``clipkit group`` with any
open_clip ViT we group its dense patch embeddings (``clipkit.dense.patch_embeddings``) in two stages that mimic
GroupViT's 64 -> 8 structure, then label the groups with the official GroupViT rule
(:func:`clipkit.groupvit.segment.label_groups`):

* stage 1: soft k-means (iterative soft assignment, softmax over clusters of cosine similarity / ``tau``) of
  the patches into ``groups[0]`` clusters, seeded on a regular grid of patches and using features plus
  ``spatial`` x normalised (row, col), so stage-1 groups are small and compact, like GroupViT's first stage;
* stage 2: the same soft assignment of the stage-1 centres (weighted by their mass) into ``groups[1]``
  clusters, seeded by farthest-point sampling, on features only.

The two soft assignment matrices play the roles of GroupViT's ``A1`` and ``A2`` (``P = A1 A2``), and a group's
embedding is the L2-normalised, P-weighted mean of its patch embeddings. Nothing here is learned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_GROUPS = (64, 8)
DEFAULT_ITERS = 10
DEFAULT_TAU = 0.05
DEFAULT_SPATIAL = 0.5


def _grid_seeds(h: int, w: int, k: int) -> Tensor:
    """Indices (row-major) of ~``k`` patches on a regular grid, exactly ``min(k, h*w)`` of them."""
    k = min(k, h * w)
    rows = max(1, round(math.sqrt(k * h / w)))
    cols = max(1, math.ceil(k / rows))
    ys = ((torch.arange(rows) + 0.5) * h / rows).long().clamp(max=h - 1)
    xs = ((torch.arange(cols) + 0.5) * w / cols).long().clamp(max=w - 1)
    idx = (ys[:, None] * w + xs[None, :]).flatten().unique()
    if len(idx) < k:  # small grids: fill with the remaining patches in order
        rest = torch.tensor([i for i in range(h * w) if i not in set(idx.tolist())], dtype=torch.long)
        idx = torch.cat([idx, rest[: k - len(idx)]])
    return idx[:k]


def _farthest_points(x: Tensor, weight: Tensor, k: int) -> Tensor:
    """``k`` indices of ``x [N, D]`` (unit rows) by farthest-point sampling, starting at the heaviest row."""
    k = min(k, x.shape[0])
    chosen = [int(weight.argmax())]
    dist = 1 - x @ x[chosen[0]]
    for _ in range(k - 1):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = torch.minimum(dist, 1 - x @ x[nxt])
    return torch.tensor(chosen, dtype=torch.long)


def soft_kmeans(x: Tensor, centres: Tensor, weight: Tensor, iters: int, tau: float) -> tuple[Tensor, Tensor]:
    """Iterative soft assignment on the unit sphere.

    x: ``[N, D]`` unit rows; centres: ``[K, D]`` initial centres; weight: ``[N]`` mass of each row.
    Returns (assignment ``[N, K]``, rows sum to 1; centres ``[K, D]`` unit rows).
    """
    c = F.normalize(centres, dim=-1)
    for _ in range(iters):
        a = (x @ c.t() / tau).softmax(dim=-1)
        c = F.normalize((a * weight[:, None]).t() @ x, dim=-1)
    return (x @ c.t() / tau).softmax(dim=-1), c


def group_patches(
    patches: Tensor,
    groups: tuple[int, int] = DEFAULT_GROUPS,
    *,
    iters: int = DEFAULT_ITERS,
    tau: float = DEFAULT_TAU,
    spatial: float = DEFAULT_SPATIAL,
) -> tuple[list[Tensor], Tensor]:
    """Two-stage grouping of one image's patch embeddings.

    patches: ``[h, w, D]`` float32 L2-normalised. Returns (``[A1 [G1, h*w], A2 [G2, G1]]`` soft assignments in
    GroupViT's group x token layout, each column summing to 1; group embeddings ``[G2, D]`` L2-normalised).
    """
    h, w, d = patches.shape
    x = patches.reshape(h * w, d).float()
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    pos = torch.stack([ys.flatten() / max(h - 1, 1), xs.flatten() / max(w - 1, 1)], dim=1).to(x.device)
    x1 = F.normalize(torch.cat([x, spatial * pos], dim=1), dim=-1)
    seeds = _grid_seeds(h, w, groups[0]).to(x.device)
    a1, _ = soft_kmeans(x1, x1[seeds], torch.ones(h * w, device=x.device), iters, tau)  # [N, G1]
    mass1 = a1.sum(dim=0)  # [G1]
    c1 = F.normalize(a1.t() @ x, dim=-1)  # stage-1 centres in feature space only
    seeds2 = _farthest_points(c1, mass1, groups[1]).to(x.device)
    a2, _ = soft_kmeans(c1, c1[seeds2], mass1, iters, tau)  # [G1, G2]
    p = a1 @ a2  # [N, G2]
    emb = F.normalize(p.t() @ x, dim=-1)
    return [a1.t().contiguous(), a2.t().contiguous()], emb


def stage_maps_from(soft: list[Tensor], grid: tuple[int, int], size: tuple[int, int]) -> list[Tensor]:
    """Cumulative, resized maps ``[1, G_i, H, W]`` from ``soft`` (as :func:`clipkit.groupvit.segment.stage_maps`)."""
    h, w = grid
    maps, acc = [], None
    for a in soft:
        t = a.t()
        acc = t if acc is None else acc @ t
        m = acc.t().reshape(1, acc.shape[1], h, w)
        maps.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False))
    return maps
