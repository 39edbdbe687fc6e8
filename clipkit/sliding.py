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


def shifted_grid(
    pixels: torch.Tensor,
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    patch: tuple[int, int],
    shifts: int,
) -> torch.Tensor:
    """A patch grid ``shifts`` times finer per axis from ``shifts²`` sub-patch-shifted passes, at the same scale.

    Pass ``(a, b)`` sees the image moved right/down by ``(a·ph/shifts, b·pw/shifts)`` pixels (zero padding, i.e.
    the normalisation mean, enters at the top/left); its patch grid is thus offset against the image. Every cell
    of the fine grid (``ph/shifts × pw/shifts`` pixels) averages the ``shifts²`` patch tokens that cover it, one
    per pass — the effect of a patch embedding with stride ``patch/shifts`` (Amir et al., "Deep ViT Features as
    Dense Visual Descriptors", 2021) while every pass stays exactly in the model's own input distribution (no
    overlapping tokens, no extra positions). Why: a small ViT's grid is coarse (shapes-clip: 12×12 patches), and
    boxes and masks taken from it are quantised to whole patches.

    Args:
        pixels: ``[B, 3, H, W]`` normalised, ``H, W`` multiples of the patch size.
        embed_fn: ``[n, 3, H, W] → [n, h, w, D]`` patch tokens (``h = H // ph``); called once on all passes.
        patch: ``(ph, pw)`` in pixels, each divisible by ``shifts``.
        shifts: passes per axis (1: ``embed_fn(pixels)`` unchanged).
    Returns:
        ``[B, h·shifts, w·shifts, D]`` — the mean of the covering tokens (not renormalised).
    """
    if shifts <= 1:
        return embed_fn(pixels)
    (ph, pw), (B, _, H, W) = patch, pixels.shape
    if ph % shifts or pw % shifts:
        raise ValueError(f"shifts={shifts} must divide the patch size {ph}x{pw}")
    sy, sx = ph // shifts, pw // shifts
    offsets = [(a * sy, b * sx) for a in range(shifts) for b in range(shifts)]
    moved = torch.cat([F.pad(pixels, (dx, 0, dy, 0))[..., :H, :W] for dy, dx in offsets])
    tokens = embed_fn(moved)  # [len(offsets)·B, h, w, D]
    h, w = tokens.shape[1], tokens.shape[2]
    fine_y = torch.arange(h * shifts, device=tokens.device) * sy  # top-left pixel of each fine cell
    fine_x = torch.arange(w * shifts, device=tokens.device) * sx
    total = None
    for i, (dy, dx) in enumerate(offsets):
        # after moving by d, patch j covers image pixels [j·p − d, (j+1)·p − d): the cell at y lies in j = (y+d)//p
        rows = ((fine_y + dy) // ph).clamp(max=h - 1)
        cols = ((fine_x + dx) // pw).clamp(max=w - 1)
        part = tokens[i * B:(i + 1) * B][:, rows][:, :, cols]
        total = part if total is None else total + part
    assert total is not None
    return total / len(offsets)
