"""Boxes drawn on an image with ``label: score`` tags (detect and ground artefacts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipkit.writers import palette

__all__ = ["draw_boxes"]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, xyxy: np.ndarray, captions: Sequence[str],
               groups: Sequence[int] | None = None, *, width: int | None = None) -> Image.Image:
    """Return an RGB copy of ``image`` with each box of ``xyxy`` (``[N,4]`` XYXY, pixels of ``image``)
    outlined and captioned with ``captions[i]`` on a filled tag above the box (inside it at the top edge).

    ``groups[i]`` picks the colour (same label/phrase → same colour; group g gets the palette colour of label
    g + 1, as in the label masks); default: one colour per box.
    """
    img = image.convert("RGB").copy()
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    if len(captions) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(captions)} captions")
    groups = list(range(len(boxes))) if groups is None else [int(g) for g in groups]
    colours = [tuple(int(v) for v in c) for c in palette(max(groups, default=-1) + 1)[1:]]
    lw = width or max(1, round(min(img.size) / 160))
    font = _font(max(10, round(min(img.size) / 28)))
    draw = ImageDraw.Draw(img)
    for box, text, g in zip(boxes, captions, groups, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        colour = colours[g]
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=lw)
        if not text:
            continue
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=font)
        tw, th = tx1 - tx0 + 4, ty1 - ty0 + 4
        ty = y0 - th if y0 - th >= 0 else y0
        tx = min(max(0.0, x0), max(0.0, img.width - tw))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0) if luma > 140 else (255, 255, 255)  # readable on light and dark tags
        draw.text((tx + 2 - tx0, ty + 2 - ty0), text, fill=ink, font=font)
    return img
