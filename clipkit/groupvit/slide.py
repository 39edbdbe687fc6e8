"""Sliding-window GroupViT inference: the official evaluation's ``mode='slide'`` (mmseg ``slide_inference``).

NVlabs' segmentation configs resize the image to a short side of 448 and slide a 448 x 448 window with stride
224; each window is segmented on its own by the official rule (:func:`clipkit.groupvit.segment.label_groups`,
its own groups, its own image-level top-k, its own background threshold), the per-pixel class scores (background
channel included) are summed over the windows that cover the pixel and divided by their count, resized to the
image (bilinear) and the argmax is the label. A window therefore has all its final groups (8) for a part of the
image: small objects are not merged into a neighbour's group for lack of groups, at the cost of one pass per
window.

Coordinates are pixels of the preprocessed image (``[1, 3, h, w]`` from :func:`~clipkit.groupvit.segment.preprocess`),
windows given by their top-left corner ``(y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.segment import OFFICIAL_BG_THRESH, OFFICIAL_TOPK, GroupSegmentation, label_groups, stage_maps


def window_corners(h: int, w: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of the ``window`` x ``window`` crops covering an ``h`` x ``w`` image with
    ``stride`` (mmseg's rule: the last row/column of windows is shifted back inside the image; an image smaller
    than the window is one crop of the whole image)."""
    if window <= 0 or stride <= 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")

    def starts(n: int) -> list[int]:
        grids = max(n - window + stride - 1, 0) // stride + 1
        return sorted({max(min(i * stride + window, n) - window, 0) for i in range(grids)})

    return [(y, x) for y in starts(h) for x in starts(w)]


@dataclass
class WindowSegmentation:
    """One window's segmentation (no background rule applied: ``bg_thresh=None``) and where it lies."""

    y: int
    x: int
    seg: GroupSegmentation  # maps of the window's size, in preprocessed pixels


@torch.inference_mode()
def segment_windows(model: GroupViT, pixels: Tensor, text_emb: Tensor, *, window: int, stride: int,
                    topk: int = OFFICIAL_TOPK) -> list[WindowSegmentation]:
    """Run the official rule on every window of ``pixels [1, 3, h, w]`` (batched); ``text_emb [N, D]``
    L2-normalised. Windows must be multiples of the patch size."""
    p = model.cfg.vision.patch_size
    if window % p or stride % p:
        raise ValueError(f"window ({window}) and stride ({stride}) must be multiples of the patch size {p}")
    h, w = pixels.shape[-2:]
    corners = window_corners(h, w, window, stride)
    crops = torch.cat([pixels[..., y:y + min(window, h), x:x + min(window, w)] for y, x in corners])
    image_x, group_x, out = model.encode_image_groups(crops)
    maps = stage_maps(out, tuple(crops.shape[-2:]))
    scale = model.logit_scale_value
    result = []
    for i, (y, x) in enumerate(corners):
        seg = label_groups([m[i:i + 1] for m in maps], F.normalize(group_x[i], dim=-1),
                           F.normalize(image_x[i], dim=-1), text_emb, scale, bg_thresh=None, topk=topk,
                           keep_scores=True)
        result.append(WindowSegmentation(y, x, seg))
    return result


def merge_windows(windows: list[WindowSegmentation], shape: tuple[int, int], size: tuple[int, int],
                  bg_thresh: float | None = OFFICIAL_BG_THRESH) -> GroupSegmentation:
    """Average the windows' class scores (and background channel) over the preprocessed image ``shape (h, w)``,
    resize to the output ``size (H, W)`` (bilinear), argmax. Group maps: each pixel shows the group of the
    window whose centre is nearest (window ``i``'s groups numbered ``i * G + g``); ``group_label`` /
    ``group_score`` are the windows' concatenated, ``image_scores`` the best over windows."""
    h, w = shape
    n = windows[0].seg.scores.shape[0]
    logits = torch.zeros(n + 1, h, w)
    count = torch.zeros(1, h, w)
    for win in windows:
        scores = torch.from_numpy(win.seg.scores)  # [N, wh, ww]
        wh, ww = scores.shape[-2:]
        cell = logits[:, win.y:win.y + wh, win.x:win.x + ww]
        cell[1:] += scores
        if bg_thresh is not None:
            thresh = min(float(bg_thresh), float(win.seg.group_score.max()))
            cell[0] += (scores.max(dim=0).values < thresh).float()
        count[:, win.y:win.y + wh, win.x:win.x + ww] += 1
    logits = F.interpolate((logits / count)[None], size=size, mode="bilinear", align_corners=False)[0]
    label = logits.argmax(dim=0).numpy()
    if bg_thresh is None:
        label = logits[1:].argmax(dim=0).numpy() + 1
    dtype = np.uint8 if n < 255 else np.uint16
    return GroupSegmentation(
        label_map=label.astype(dtype),
        scores=logits[1:].numpy(),
        group_maps=_stitched_group_maps(windows, shape, size),
        group_label=np.concatenate([_thresholded(win.seg, bg_thresh) for win in windows]),
        group_score=np.concatenate([win.seg.group_score for win in windows]),
        image_scores=np.max([win.seg.image_scores for win in windows], axis=0),
    )


def _thresholded(seg: GroupSegmentation, bg_thresh: float | None) -> np.ndarray:
    """A window's group -> label with its own background rule applied (0 = background)."""
    if bg_thresh is None:
        return seg.group_label
    thresh = min(float(bg_thresh), float(seg.group_score.max()))
    return np.where(seg.group_score < thresh, 0, seg.group_label)


def _stitched_group_maps(windows: list[WindowSegmentation], shape: tuple[int, int],
                         size: tuple[int, int]) -> list[np.ndarray]:
    """Per stage ``[H, W]`` int32: each pixel takes the group of the window whose centre is nearest."""
    h, w = shape
    centres = np.array([(win.y + win.seg.group_maps[0].shape[0] / 2, win.x + win.seg.group_maps[0].shape[1] / 2)
                        for win in windows])
    yy, xx = np.mgrid[0:h, 0:w]
    nearest = np.argmin((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, axis=-1)
    stitched = []
    last = len(windows[0].seg.group_maps) - 1
    for stage in range(last + 1):
        groups = (len(windows[0].seg.group_label) if stage == last
                  else 1 + max(int(win.seg.group_maps[stage].max()) for win in windows))
        full = np.zeros((h, w), np.int32)
        for i, win in enumerate(windows):
            gm = win.seg.group_maps[stage]
            region = nearest[win.y:win.y + gm.shape[0], win.x:win.x + gm.shape[1]] == i
            full[win.y:win.y + gm.shape[0], win.x:win.x + gm.shape[1]][region] = gm[region] + i * groups
        resized = F.interpolate(torch.from_numpy(full)[None, None].float(), size=size, mode="nearest")
        stitched.append(resized[0, 0].numpy().astype(np.int32))
    return stitched


def segment_slide(model: GroupViT, pixels: Tensor, text_emb: Tensor, size: tuple[int, int], *, window: int,
                  stride: int, bg_thresh: float | None = OFFICIAL_BG_THRESH,
                  topk: int = OFFICIAL_TOPK) -> GroupSegmentation:
    """:func:`segment_windows` then :func:`merge_windows`: one image, output of ``size (H, W)``."""
    windows = segment_windows(model, pixels, text_emb, window=window, stride=stride, topk=topk)
    return merge_windows(windows, tuple(pixels.shape[-2:]), size, bg_thresh)
