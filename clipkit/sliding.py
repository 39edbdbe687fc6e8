"""Images into windows for dense predictions: the normalised input tensor, the official NACLIP/SCLIP/ClearCLIP
``forward_slide`` (pooled across images, so the backbone sees full batches), and sub-patch shifted passes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def image_tensor(model: Any, image: Image.Image, *, short_side: int | None = None) -> torch.Tensor:
    """Image → ``[1, 3, H', W']`` normalised float32 on the model's device, no crop.

    ``short_side``: resize (bicubic, aspect kept) so the short side has this many pixels; ``None`` keeps the
    image's own size. Mean/std come from the ``LoadedModel`` (OpenAI's when absent).
    """
    image = image.convert("RGB")
    if short_side:
        w, h = image.size
        r = short_side / min(w, h)
        if abs(r - 1.0) > 1e-6:
            image = image.resize((max(1, round(w * r)), max(1, round(h * r))), Image.BICUBIC)
    mean = getattr(model, "mean", (0.48145466, 0.4578275, 0.40821073))
    std = getattr(model, "std", (0.26862954, 0.26130258, 0.27577711))
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    arr = (arr - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    device = getattr(model, "device", None) or next(getattr(model, "model", model).parameters()).device
    return arr.unsqueeze(0).to(device)


def model_window(model: Any) -> tuple[int, int]:
    """The model's input size ``(H, W)`` — the sliding window (a ``LoadedModel``'s, else its image tower's)."""
    size = getattr(model, "image_size", None)
    if size is None:
        size = getattr(model, "model", model).visual.image_size
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _windows(H: int, W: int, window: tuple[int, int],
             stride: tuple[int, int]) -> tuple[int, int, list[tuple[int, int]]]:
    """Crop size ``(ch, cw)`` (the window clipped to the image) and the windows' top-left corners: every
    ``stride``, the last row/column shifted back inside the image (the official ``forward_slide`` grid)."""
    ch, cw = min(window[0], H), min(window[1], W)
    sh, sw = max(1, stride[0]), max(1, stride[1])
    ys = [min(i * sh, max(H - ch, 0)) for i in range(max(H - ch + sh - 1, 0) // sh + 1)]
    xs = [min(j * sw, max(W - cw, 0)) for j in range(max(W - cw + sw - 1, 0) // sw + 1)]
    return ch, cw, sorted({(y, x) for y in ys for x in xs})


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
    return sliding_logits_batch([pixels], crop_fn, window=window, stride=stride, patch=patch, batch=batch)[0]


def sliding_logits_batch(
    images: Sequence[torch.Tensor],
    crop_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    patch: tuple[int, int],
    batch: int = 8,
) -> list[torch.Tensor]:
    """:func:`sliding_logits` of several images (each ``[1, 3, H_i, W_i]``), their windows pooled: windows of
    the same crop size, from any of the images, share ``crop_fn`` calls of up to ``batch`` crops, so the
    backbone sees full batches however few windows each image has. Returns one ``[N, H_i, W_i]`` per image,
    the same numbers as image by image (each crop's logits depend on that crop alone)."""
    by_size: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for i, pixels in enumerate(images):
        ch, cw, corners = _windows(pixels.shape[-2], pixels.shape[-1], window, stride)
        by_size.setdefault((ch, cw), []).extend((i, y, x) for y, x in corners)
    totals: list[torch.Tensor | None] = [None] * len(images)
    counts = [torch.zeros(1, p.shape[-2], p.shape[-1], device=p.device) for p in images]
    for (ch, cw), jobs in by_size.items():
        pad_h, pad_w = (-ch) % patch[0], (-cw) % patch[1]
        top, left = pad_h // 2, pad_w // 2
        for s in range(0, len(jobs), batch):
            chunk = jobs[s : s + batch]
            crops = torch.cat([images[i][:, :, y : y + ch, x : x + cw] for i, y, x in chunk])
            if pad_h or pad_w:
                crops = F.pad(crops, (left, pad_w - left, top, pad_h - top))
            logits = crop_fn(crops).float()
            logits = F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits[:, :, top : top + ch, left : left + cw]
            for (i, y, x), lg in zip(chunk, logits, strict=True):
                if totals[i] is None:
                    totals[i] = torch.zeros(lg.shape[0], *images[i].shape[-2:], device=lg.device)
                totals[i][:, y : y + ch, x : x + cw] += lg  # type: ignore[index]
                counts[i][:, y : y + ch, x : x + cw] += 1
    return [total / count for total, count in zip(totals, counts, strict=True)]  # type: ignore[operator]


def slide_images(model: Any, images: Sequence[Image.Image], crop_fn: Callable[[torch.Tensor], torch.Tensor], *,
                 patch: tuple[int, int], stride: int | tuple[int, int] | None = None, short_side: int | None = None,
                 full_size: bool = True) -> list[torch.Tensor]:
    """The dense methods' sliding inference over PIL ``images``: each resized so its short side is
    ``short_side`` (default: the model's window's), windows of the model's input size at ``stride`` (default:
    half the window, the official 112 for 224) pooled across the images (:func:`sliding_logits_batch`), and the
    ``[N, h, w]`` logits resized back to each image's size unless ``full_size`` is False."""
    from clipkit.errors import UsageError

    window = model_window(model)
    if stride is None:
        stride = (max(1, window[0] // 2), max(1, window[1] // 2))
    elif isinstance(stride, int):
        stride = (stride, stride)
    if min(stride) < 1:
        raise UsageError("stride must be a positive number of pixels")
    pixels = [image_tensor(model, image, short_side=short_side or min(window)) for image in images]
    out = []
    with torch.inference_mode():
        logits = sliding_logits_batch(pixels, crop_fn, window=window, stride=stride, patch=patch)
        for image, lg in zip(images, logits, strict=True):
            size = (image.size[1], image.size[0])
            if full_size and lg.shape[-2:] != size:
                lg = F.interpolate(lg[None], size=size, mode="bilinear", align_corners=False)[0]
            out.append(lg)
    return out


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
