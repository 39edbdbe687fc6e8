"""Artefact writers: every file clipkit writes appears whole or not at all.

Files are written to a temporary name in the destination folder, flushed, fsynced and moved into place with
``os.replace``, so an interrupted run never leaves a truncated PNG or JSON that a resumed run would trust.
"""

from __future__ import annotations

import colorsys
import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the mode a plain open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_image(path: str | Path, image: Image.Image, **params) -> Path:
    """Save a PIL image atomically; the format follows the suffix (PNG, GIF, JPEG…)."""
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"), **params)
    return atomic_write_bytes(path, buffer.getvalue())


def palette(n: int) -> np.ndarray:
    """``[n + 1, 3]`` uint8 colours: index 0 (background) black, then well-separated hues."""
    colours = [(0, 0, 0)]
    for k in range(n):
        hue = (k * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbouring labels distinct
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return np.array(colours, dtype=np.uint8)


def label_png(label_map: np.ndarray, n_labels: int) -> Image.Image:
    """A PNG image whose pixel values are the label indices (0 = background): palette ('P' mode) for up to 255
    labels, 16-bit greyscale ('I;16') beyond (palette PNGs hold at most 256 colours)."""
    if n_labels > 255:
        return Image.fromarray(label_map.astype(np.uint16))
    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette(palette(n_labels).reshape(-1).tolist())
    return image


def save_label_png(path: str | Path, label_map: np.ndarray, n_labels: int) -> Path:
    """Write ``label_map`` (``[H, W]``, 0 = background, k = k-th label) as a palette PNG, atomically."""
    return save_image(path, label_png(label_map, n_labels))


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def overlay(image: Image.Image, label_map: np.ndarray, labels: Sequence[str], alpha: float = 0.5) -> Image.Image:
    """The image with each label's pixels tinted in its palette colour and a legend of the labels present."""
    colours = palette(len(labels))
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = colours[label_map].astype(np.float32)
    mask = (label_map > 0)[..., None]
    blended = np.where(mask, base * (1 - alpha) + tint * alpha, base).astype(np.uint8)
    out = Image.fromarray(blended)
    present = [k for k in range(1, len(labels) + 1) if (label_map == k).any()]
    if present:
        font = _font(max(10, min(out.size) // 30))
        draw = ImageDraw.Draw(out)
        pad, y = 4, 4
        for k in present:
            text = labels[k - 1]
            _x0, y0, x1, y1 = draw.textbbox((pad + 16, y), text, font=font)
            draw.rectangle((pad - 2, y - 2, x1 + 2, y1 + 2), fill=(255, 255, 255))
            draw.rectangle((pad, y, pad + 12, y + (y1 - y0)), fill=tuple(int(c) for c in colours[k]))
            draw.text((pad + 16, y), text, fill=(0, 0, 0), font=font)
            y = y1 + 6
    return out


def save_overlay_png(path: str | Path, image: Image.Image, label_map: np.ndarray, labels: Sequence[str]) -> Path:
    """Write the tinted overlay with a legend, atomically."""
    return save_image(path, overlay(image, label_map, labels))


def save_scores_npz(path: str | Path, scores: np.ndarray, labels: Sequence[str]) -> Path:
    """Per-label score maps ``[N, H, W]`` as float16 in an .npz (keys ``scores``, ``labels``), atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=scores.astype(np.float16), labels=np.array(list(labels)))
    return atomic_write_bytes(path, buffer.getvalue())
