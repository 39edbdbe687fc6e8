"""Zero-shot segmentation with GroupViT, as the official evaluation computes it.

NVlabs/GroupViT ``segmentation/evaluation/group_vit_seg.py`` (``GroupViTSegInference``):

1. the soft assignments (softmax over groups) of the grouping stages are multiplied, patch -> stage-1 group ->
   stage-2 group, giving ``P [N_patches, G]``, resized bilinearly to the image and turned one-hot by argmax;
2. group embeddings (projected, L2-normalised) are scored against the label text embeddings
   ``x min(exp(logit_scale), 100)``; classes outside the image-level top-5 (by the pooled image embedding) are
   masked; score = softmax over the kept classes x softmax over all classes;
3. a pixel takes its group's scores; background where its best score is below ``min(bg_thresh, best group
   score)`` (official: 0.95 on VOC and COCO, 0.35 on Context); argmax.

Deviations: the soft maps are resized straight to the original image size (the official code resizes to the
network input and mmseg resizes the logits again: one bilinear step instead of two); "whole" inference only,
at a short side of ``short_side`` px (official: 448 with a 448/224 sliding window for a model trained at 224).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from clipkit.groupvit.config import GroupViTConfig
from clipkit.groupvit.model import GroupViT, VisionOutput
from clipkit.pixelwise import upsampled_argmax

OFFICIAL_BG_THRESH = 0.95  # VOC / COCO setting of the official evaluation
OFFICIAL_TOPK = 5


def preprocess(image: Image.Image, model: GroupViT, short_side: int | None = None) -> Tensor:
    """RGB PIL image -> ``[1, 3, h, w]`` float32 (channels-last in memory), short side ``short_side`` (default:
    the training size), both sides rounded to multiples of the patch size, normalised with the model's mean/std."""
    return Pixels(model.cfg, short_side)(image)[None]


@dataclass(frozen=True)
class Pixels:
    """:func:`preprocess` without the model: a picklable ``image -> [3, h, w]`` for the runner's decoding workers,
    which then resize and normalise beside the model instead of before it."""

    cfg: GroupViTConfig
    short_side: int | None = None

    def __call__(self, image: Image.Image) -> Tensor:
        cfg = self.cfg
        p = cfg.vision.patch_size
        s = self.short_side or cfg.vision.image_size
        w, h = image.size
        scale = s / min(w, h)
        nw, nh = max(p, round(w * scale / p) * p), max(p, round(h * scale / p) * p)
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        # normalised in place in the decoder's [h, w, 3] layout (the patch embedding wants channels-last anyway)
        x = torch.from_numpy(np.asarray(rgb.resize((nw, nh), Image.Resampling.BICUBIC), dtype=np.float32))
        rows = x.div_(255.0).view(nh, nw * 3)  # mean and std tiled along a row: a long inner loop, not one of 3
        rows.sub_(torch.tensor(cfg.image_mean).repeat(nw)).div_(torch.tensor(cfg.image_std).repeat(nw))
        return x.permute(2, 0, 1)


def stage_maps(out: VisionOutput, size: tuple[int, int] | None) -> list[Tensor]:
    """Cumulative soft assignment per grouping stage, resized: list of ``[B, G_i, H, W]`` float32 (``size=None``:
    at the patch grid, ``[B, G_i, h, w]``, for :func:`label_groups` to upsample only what it needs).

    Stage i's map is ``A_1 A_2 ... A_i`` (pixel -> group of stage i), each ``A`` the softmax over groups.
    """
    h, w = out.grid
    maps, acc = [], None
    for soft in out.soft:  # [B, G_i, N_i]
        a = soft.transpose(1, 2)  # [B, N_i, G_i]
        acc = a if acc is None else acc @ a
        grid = acc.transpose(1, 2).reshape(acc.shape[0], acc.shape[2], h, w)
        maps.append(grid if size is None else F.interpolate(grid, size=size, mode="bilinear", align_corners=False))
    return maps


@dataclass
class GroupSegmentation:
    """One image's result.

    label_map: ``[H, W]`` uint8/uint16, 0 = background, k = ``labels[k-1]``.
    scores: ``[N, H, W]`` float32 per-label score of each pixel (its group's score; 0 outside the top-k), only
    when asked for (``keep_scores``; else None: it is the one O(labels·H·W) output).
    mean_scores: ``[N]`` float64, each label's mean score over its pixels (NaN where it has none), from the
    groups' scores weighted by their pixels: what ``scores`` would give, without forming it.
    group_maps: per stage ``[H, W]`` int32 group index (argmax of the cumulative soft assignment).
    group_label: ``[G]`` int, final-stage group -> label index (1-based; 0 = background or unused).
    group_score: ``[G]`` float32, that group's best score.
    """

    label_map: np.ndarray
    scores: np.ndarray | None
    group_maps: list[np.ndarray]
    group_label: np.ndarray
    group_score: np.ndarray
    image_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    mean_scores: np.ndarray | None = None


@torch.inference_mode()
def segment(
    model: GroupViT,
    pixels: Tensor,
    text_emb: Tensor,
    size: tuple[int, int],
    *,
    bg_thresh: float | None = OFFICIAL_BG_THRESH,
    topk: int = OFFICIAL_TOPK,
    keep_scores: bool = False,
) -> GroupSegmentation:
    """Segment one image with a GroupViT.

    pixels: ``[1, 3, h, w]`` from :func:`preprocess`; text_emb: ``[N, D]`` L2-normalised label embeddings;
    size: ``(H, W)`` of the output (the original image); ``bg_thresh=None`` disables background;
    ``keep_scores``: also the per-pixel ``[N, H, W]`` scores.
    """
    return segment_batch(model, [pixels], text_emb, [size], bg_thresh=bg_thresh, topk=topk,
                         keep_scores=keep_scores)[0]


@torch.inference_mode()
def segment_batch(
    model: GroupViT,
    pixels: list[Tensor],
    text_emb: Tensor,
    sizes: list[tuple[int, int]],
    *,
    bg_thresh: float | None = OFFICIAL_BG_THRESH,
    topk: int = OFFICIAL_TOPK,
    keep_scores: bool = False,
) -> list[GroupSegmentation]:
    """:func:`segment` of several images (``pixels[i]`` ``[1, 3, h_i, w_i]``, output size ``sizes[i]``); the
    images whose preprocessed shapes match go through the encoder as one batch."""
    results: list[GroupSegmentation | None] = [None] * len(pixels)
    same_shape: dict[tuple[int, ...], list[int]] = {}
    for i, px in enumerate(pixels):
        same_shape.setdefault(tuple(px.shape[-2:]), []).append(i)
    for members in same_shape.values():
        # stacked channels-last (preprocess's layout; a plain cat would copy them to channels-first)
        batch = torch.cat([pixels[i].permute(0, 2, 3, 1) for i in members]).permute(0, 3, 1, 2)
        image_x, group_x, out = model.encode_image_groups(batch)
        for j, i in enumerate(members):
            maps = stage_maps(replace(out, soft=[s[j:j + 1] for s in out.soft]), None)
            results[i] = label_groups(maps, F.normalize(group_x[j], dim=-1), F.normalize(image_x[j], dim=-1),
                                      text_emb, model.logit_scale_value, bg_thresh=bg_thresh, topk=topk,
                                      size=sizes[i], keep_scores=keep_scores)
    return results  # type: ignore[return-value]


def label_groups(
    maps: list[Tensor],
    groups: Tensor,
    image: Tensor,
    text_emb: Tensor,
    scale: float,
    *,
    bg_thresh: float | None = OFFICIAL_BG_THRESH,
    topk: int = OFFICIAL_TOPK,
    size: tuple[int, int] | None = None,
    keep_scores: bool = False,
) -> GroupSegmentation:
    """Steps 2-3 of the official rule (module docstring) for one image.

    maps: per stage ``[1, G_i, H, W]`` cumulative soft assignments (last = final groups), or at the patch grid
    with ``size = (H, W)`` (the arg-max of their bilinear resize is then taken without forming it:
    :func:`clipkit.pixelwise.upsampled_argmax`); groups: ``[G, D]`` and image: ``[D]`` L2-normalised embeddings;
    text_emb: ``[N, D]`` L2-normalised; scale: the softmax scale; ``keep_scores``: also the ``[N, H, W]``
    per-pixel scores (each pixel its group's).
    """

    def pixel_group(m: Tensor) -> Tensor:  # [1, G, ·, ·] -> int32 [H, W]; max's indices: argmax is 5x slower
        return m[0].max(dim=0).indices.int() if size is None else upsampled_argmax(m[0], size)

    g = maps[-1].shape[1]
    group_of_pixel = pixel_group(maps[-1])  # [H, W]
    n = text_emb.shape[0]
    affinity = groups.float() @ text_emb.float().t() * scale  # [G, N]
    pre = affinity.softmax(dim=-1)
    image_aff = (image.float() @ text_emb.float().t() * scale).softmax(dim=-1)  # [N]
    keep = torch.zeros(n, dtype=torch.bool, device=affinity.device)
    keep[image_aff.topk(min(topk, n)).indices] = True
    group_aff = affinity.masked_fill(~keep, float("-inf")).softmax(dim=-1) * pre  # [G, N]
    best, best_idx = group_aff.max(dim=-1)  # [G]
    # a pixel's scores are its group's, so its label is its group's: decided per group, then gathered
    if bg_thresh is not None:
        thresh = min(float(bg_thresh), float(group_aff.max()))
        group_label = torch.where(best < thresh, 0, best_idx + 1)
    else:
        group_label = best_idx + 1
    flat = group_of_pixel.cpu().view(-1)  # int32: half the bytes of int64 through the gather and the count
    group_aff, group_label = group_aff.float().cpu(), group_label.cpu()
    dtype = np.uint8 if n < 255 else np.uint16
    small = torch.uint8 if n < 255 else torch.int32  # gathered at the output's width where torch has it
    label = group_label.to(small).index_select(0, flat).view(group_of_pixel.shape)  # [H, W] (a flat gather)
    pixels = torch.bincount(flat, minlength=g)
    group_label = torch.where(pixels > 0, group_label, 0)
    # a label's mean score over its pixels: its groups' scores weighted by their pixels (what ``scores`` averages)
    weight = torch.zeros(g, n + 1, dtype=torch.float64).index_put_((torch.arange(g), group_label), pixels.double())
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_scores = ((weight[:, 1:] * group_aff.double()).sum(0) / weight[:, 1:].sum(0)).numpy()
    return GroupSegmentation(
        label_map=label.numpy().astype(dtype, copy=False),
        scores=group_aff.t().contiguous().index_select(1, flat).view(n, *group_of_pixel.shape).numpy()
        if keep_scores else None,  # [N, H, W]: each pixel its group's scores
        group_maps=[*(pixel_group(m).cpu().numpy() for m in maps[:-1]), group_of_pixel.cpu().numpy()],
        group_label=group_label.numpy(),
        group_score=best.float().cpu().numpy(),
        image_scores=image_aff.float().cpu().numpy(),
        mean_scores=mean_scores,
    )


def purity(group_map: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(pixel-weighted purity, pixels) of a group map against a label map of the same ``[H, W]`` shape.

    purity = sum over groups of the largest ground-truth class count inside the group / all pixels.
    """
    g = group_map.astype(np.int64).ravel()
    y = gt.astype(np.int64).ravel()
    counts = np.zeros((int(g.max()) + 1, int(y.max()) + 1), dtype=np.int64)
    np.add.at(counts, (g, y), 1)
    return float(counts.max(axis=1).sum() / max(g.size, 1)), float(g.size)
