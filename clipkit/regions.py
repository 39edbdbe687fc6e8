"""Region embeddings for boxes on one image, in CLIP's joint image-text space (shared by detect and ground).

Two paths, as in ViLD (Gu et al. 2022; tensorflow/tpu ``models/official/detection/projects/vild``):

* **image path** (ViLD-image): each proposal is cropped at 1× and at 1.5× (same centre, more context), each
  crop is padded to a square, resized to the model input and embedded by the CLIP image encoder; the two
  embeddings are summed and renormalised. Crops are taken with ``torchvision.ops.roi_align`` on the
  normalised image, so the padding is the dataset mean (0 after normalisation)
  and the whole batch is cut in one call.
* **fast path** (stands in for ViLD-text's RoI features): one forward pass of the dense patch embeddings
  (:func:`clipkit.dense.patch_embeddings`, ``[1, h, w, D]``: the stock tokens of average-pooled towers such as
  shapes-clip, NACLIP's training-free features otherwise), then
  ``roi_align`` average-pools the patch embeddings inside each box, and the result is L2-normalised.

Deviation: ViLD's fast path is a detector head distilled from the image path; with no training we pool
training-free dense CLIP features instead. Crops are padded to a square (the paper resizes the box to a
square; padding keeps shapes undistorted) — set ``pad_square=False`` to stretch like the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align

from clipkit.dense import default_variant

__all__ = ["RegionConfig", "default_variant", "dense_patches", "dense_patches_batch", "fast_embeddings",
           "image_embeddings", "image_tensor", "patch_pixels", "region_config", "square_boxes"]


@dataclass(frozen=True)
class RegionConfig:
    """Defaults of the region-embedding paths (every field can be overridden by name)."""

    context_scales: tuple[float, ...] = (1.0, 1.5)  # ViLD-image: 1× and 1.5× crops, embeddings summed
    pad_square: bool = True  # pad each crop to a square (True) or stretch it to a square (False, as ViLD)
    batch_size: int = 64  # crops per encoder forward pass
    dense_variant: str | None = None  # clipkit.dense variant for the fast path; None: default_variant(model)
    fast_long_side: int | None = None  # fast-path input long side in px (None: the model's input size)
    dense_shifts: int = 4  # sub-patch shifted passes per axis for the dense grid (finer boxes; 1 = one pass)
    roi_output: int = 4  # roi_align output grid for the fast path, averaged after pooling
    sampling_ratio: int = 2  # roi_align samples per bin side (2×2 bilinear samples per output cell)


def region_config(overrides: dict[str, Any] | None = None) -> RegionConfig:
    """The defaults of :class:`RegionConfig` with ``overrides`` (a method config's ``regions`` dict) applied."""
    return replace(RegionConfig(), **(overrides or {}))


def image_tensor(model: Any, image: Image.Image) -> torch.Tensor:
    """The whole image as a normalised float32 tensor ``[1, 3, H, W]`` (original size) on ``model.device``."""
    arr = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    x = arr.permute(2, 0, 1).unsqueeze(0)
    mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).to(model.device)


def square_boxes(boxes: np.ndarray | torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Square boxes of side ``scale · max(w, h)`` centred on ``boxes`` ``[K,4]`` XYXY, and the grown boxes.

    Returns ``(square [K,4], rect [K,4])`` float32 XYXY in the same pixels; ``rect`` is the box grown by
    ``scale`` about its centre (the crop), ``square`` the square that contains it (the padded crop).
    """
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = (b[:, 2] - b[:, 0]).clamp(min=1.0) * scale, (b[:, 3] - b[:, 1]).clamp(min=1.0) * scale
    side = torch.maximum(w, h)
    rect = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    square = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)
    return square, rect


def _crops(x: torch.Tensor, boxes: np.ndarray, scale: float, size: tuple[int, int], pad_square: bool,
           sampling_ratio: int) -> torch.Tensor:
    """``[K, 3, H, W]`` crops of the normalised image ``x`` ``[1,3,Hi,Wi]``; outside the crop rectangle (and
    outside the image) the value is 0, i.e. the normalisation mean."""
    square, rect = square_boxes(boxes, scale)
    img_w, img_h = x.shape[-1], x.shape[-2]
    # the crop never reaches past the image: context that does not exist is padding, not border smear
    rect[:, [0, 2]] = rect[:, [0, 2]].clamp(0, img_w)
    rect[:, [1, 3]] = rect[:, [1, 3]].clamp(0, img_h)
    region = square if pad_square else rect
    rois = torch.cat([torch.zeros(len(region), 1), region], 1).to(x.device)
    out = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)
    if pad_square:
        # keep only the part of the square that is inside the (clipped) crop rectangle
        hh, ww = size
        ys = (torch.arange(hh, dtype=torch.float32) + 0.5) / hh  # output cell centres in [0, 1]
        xs = (torch.arange(ww, dtype=torch.float32) + 0.5) / ww
        side = (square[:, 2] - square[:, 0]).clamp(min=1e-6)
        ry0 = ((rect[:, 1] - square[:, 1]) / side)[:, None]
        ry1 = ((rect[:, 3] - square[:, 1]) / side)[:, None]
        rx0 = ((rect[:, 0] - square[:, 0]) / side)[:, None]
        rx1 = ((rect[:, 2] - square[:, 0]) / side)[:, None]
        my = (ys[None] >= ry0) & (ys[None] <= ry1)
        mx = (xs[None] >= rx0) & (xs[None] <= rx1)
        mask = (my[:, :, None] & mx[:, None, :]).to(out.device, out.dtype)
        out = out * mask[:, None]
    return out


@torch.inference_mode()
def image_embeddings(model: Any, image: Image.Image, boxes: np.ndarray, *, cfg: RegionConfig | None = None,
                     x: torch.Tensor | None = None) -> torch.Tensor:
    """ViLD-image region embeddings: ``[K, D]`` float32, L2-normalised, on ``model.device``.

    ``boxes``: ``[K, 4]`` XYXY in pixels of ``image``. ``x``: the image tensor from :func:`image_tensor` when
    the caller already has it. Each crop scale is embedded and the embeddings are summed, then renormalised.
    """
    cfg = cfg or RegionConfig()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return torch.zeros(0, _embed_dim(model), device=model.device)
    x = image_tensor(model, image) if x is None else x
    total = None
    for scale in cfg.context_scales:
        embs = []
        for i in range(0, len(boxes), cfg.batch_size):
            crops = _crops(x, boxes[i:i + cfg.batch_size], scale, tuple(model.image_size), cfg.pad_square,
                           cfg.sampling_ratio)
            embs.append(model.encode_image(crops).float())
        e = torch.cat(embs)
        total = e if total is None else total + e
    return F.normalize(total, dim=-1)


def _embed_dim(model: Any) -> int:
    proj = getattr(model.model.visual, "proj", None)
    if proj is not None:
        return int(proj.shape[1])
    return int(getattr(model.model, "embed_dim", 512))


def patch_pixels(model: Any, image: Image.Image, cfg: RegionConfig | None = None) -> float:
    """The size of one patch of :func:`dense_patches`'s grid in pixels of ``image`` (before ``dense_shifts``)."""
    from clipkit.dense import patch_grid

    cfg = cfg or RegionConfig()
    return max(patch_grid(model)) * max(image.size) / (cfg.fast_long_side or max(model.image_size))


def fast_input(model: Any, image: Image.Image, long_side: int | None) -> torch.Tensor:
    """The image resized (aspect kept) so its longer side is ``long_side`` (default: the model's input size),
    each side rounded to a multiple of the patch size; ``[1, 3, H', W']`` normalised on ``model.device``."""
    from clipkit.dense import patch_grid

    patch = max(patch_grid(model))
    target = long_side or max(model.image_size)
    w, h = image.size
    s = target / max(w, h)
    nw = max(patch, round(w * s / patch) * patch)
    nh = max(patch, round(h * s / patch) * patch)
    resized = image.convert("RGB").resize((nw, nh), Image.BICUBIC)
    return image_tensor(model, resized)


@torch.inference_mode()
def fast_embeddings(model: Any, image: Image.Image, boxes: np.ndarray, *, cfg: RegionConfig | None = None,
                    patches: torch.Tensor | None = None) -> torch.Tensor:
    """Fast-path region embeddings: ``[K, D]`` float32, L2-normalised, on ``model.device``.

    ``patches``: precomputed ``[1, h, w, D]`` dense patch embeddings of this image (any grid; the boxes are
    mapped from image pixels to the grid), else computed here in one forward pass.
    """
    cfg = cfg or RegionConfig()
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if patches is None:
        patches = dense_patches(model, image, cfg)
    grid = patches[0].permute(2, 0, 1).unsqueeze(0).float()  # [1, D, h, w]
    if len(boxes) == 0:
        return torch.zeros(0, grid.shape[1], device=grid.device)
    w, h = image.size
    sx, sy = grid.shape[-1] / w, grid.shape[-2] / h
    b = torch.from_numpy(boxes).clone()
    b[:, [0, 2]] *= sx
    b[:, [1, 3]] *= sy
    rois = torch.cat([torch.zeros(len(b), 1), b], 1).to(grid.device)
    pooled = roi_align(grid, rois, output_size=cfg.roi_output, spatial_scale=1.0,
                       sampling_ratio=cfg.sampling_ratio, aligned=True)  # [K, D, r, r]
    return F.normalize(pooled.mean((2, 3)), dim=-1)


@torch.inference_mode()
def dense_patches(model: Any, image: Image.Image, cfg: RegionConfig | None = None) -> torch.Tensor:
    """``[1, h, w, D]`` L2-normalised dense patch embeddings of ``image`` from one batched forward pass
    (``cfg.dense_shifts²`` shifted copies of the image; the grid is ``dense_shifts`` times finer)."""
    return dense_patches_batch(model, [image], cfg)[0]


#: Images whose dense passes share one forward call (each brings ``dense_shifts²`` shifted copies).
DENSE_IMAGES_PER_CALL = 4


@torch.inference_mode()
def dense_patches_batch(model: Any, images: Sequence[Image.Image],
                        cfg: RegionConfig | None = None) -> list[torch.Tensor]:
    """:func:`dense_patches` of several images: those whose resized inputs have the same shape share forward
    calls (up to :data:`DENSE_IMAGES_PER_CALL` at a time). One ``[1, h, w, D]`` per image, in order."""
    from clipkit.dense import patch_embeddings

    cfg = cfg or RegionConfig()
    variant = cfg.dense_variant or default_variant(model)
    inputs = [fast_input(model, image, cfg.fast_long_side) for image in images]
    out: list[torch.Tensor | None] = [None] * len(inputs)
    same_shape: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        same_shape.setdefault(tuple(x.shape[-2:]), []).append(i)
    for members in same_shape.values():
        for s in range(0, len(members), DENSE_IMAGES_PER_CALL):
            chunk = members[s:s + DENSE_IMAGES_PER_CALL]
            emb = patch_embeddings(model, torch.cat([inputs[i] for i in chunk]), variant=variant,
                                   shifts=cfg.dense_shifts)
            for j, i in enumerate(chunk):
                out[i] = emb[j:j + 1]
    return out  # type: ignore[return-value]
