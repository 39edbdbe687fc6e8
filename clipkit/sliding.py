"""Sliding-window inference for dense predictions, as the official NACLIP/SCLIP/ClearCLIP ``forward_slide``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def sliding_logits(
    pixels: torch.Tensor,
    crop_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    patch: tuple[int, int],
    batch: int = 8,
) -> torch.Tensor:
    """Sliding-window inference as in the official NACLIP/SCLIP/ClearCLIP ``forward_slide``.

    Windows of ``window`` (clipped to the image) at ``stride``; the last row/column is shifted back inside the
    image. Each crop is zero-padded to a multiple of ``patch`` (ClearCLIP), ``crop_fn`` maps a crop batch
    ``[b, 3, h, w]`` to ``[b, N, h', w']`` logits at any resolution, which are bilinearly resized to the
    padded crop, un-padded, summed and divided by the overlap count.

    Returns:
        ``[N, H, W]`` float32 at the resolution of ``pixels`` (``[1, 3, H, W]``).
    """
    _, _, H, W = pixels.shape
    ch, cw = min(window[0], H), min(window[1], W)
    sh, sw = max(1, stride[0]), max(1, stride[1])
    ys = [min(i * sh, max(H - ch, 0)) for i in range(max(H - ch + sh - 1, 0) // sh + 1)]
    xs = [min(j * sw, max(W - cw, 0)) for j in range(max(W - cw + sw - 1, 0) // sw + 1)]
    boxes = sorted({(y, x) for y in ys for x in xs})
    pad_h, pad_w = (-ch) % patch[0], (-cw) % patch[1]
    top, left = pad_h // 2, pad_w // 2
    if len(boxes) == 1 and not (pad_h or pad_w):  # one window covering the image: no accumulation needed
        logits = crop_fn(pixels).float()
        return F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)[0]
    total: torch.Tensor | None = None
    count = torch.zeros(1, H, W, device=pixels.device)
    for i in range(0, len(boxes), batch):
        chunk = boxes[i : i + batch]
        crops = torch.cat([pixels[:, :, y : y + ch, x : x + cw] for y, x in chunk])
        if pad_h or pad_w:
            crops = F.pad(crops, (left, pad_w - left, top, pad_h - top))
        logits = crop_fn(crops).float()
        logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits[:, :, top : top + ch, left : left + cw]
        if total is None:
            total = torch.zeros(logits.shape[1], H, W, device=pixels.device)
        for (y, x), lg in zip(chunk, logits, strict=True):
            total[:, y : y + ch, x : x + cw] += lg
            count[:, y : y + ch, x : x + cw] += 1
    assert total is not None
    return total / count
