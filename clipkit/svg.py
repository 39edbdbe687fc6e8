"""Stroke sketches as SVG: one cubic-Bézier ``<path>`` per stroke, and back.

Coordinates are canvas pixels (x right, y down, origin at the top-left corner), the same as the renderers'
(:mod:`clipkit.render`); ``stroke-width`` is the full width in pixels. Strokes are drawn black, with
round caps and joins (the shape a distance-to-curve rasterizer draws), over a white background ``<rect>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from clipkit.errors import UsageError

SVG_NS = "http://www.w3.org/2000/svg"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _fmt(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".") if v == v else "0"


def to_svg(points: np.ndarray, widths: float | Sequence[float] | np.ndarray, size: tuple[int, int]) -> str:
    """SVG text of N strokes.

    Args:
        points: float array [N, 4, 2], cubic control points (x, y) in canvas pixels.
        widths: full stroke width(s) in pixels, a float or [N].
        size: canvas (width, height) in pixels.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 4, 2)
    w_all = np.broadcast_to(np.asarray(widths, dtype=np.float64).reshape(-1), (len(pts),))
    cw, ch = size
    lines = [
        f'<svg xmlns="{SVG_NS}" version="1.1" width="{cw}" height="{ch}" viewBox="0 0 {cw} {ch}">',
        '  <rect x="0" y="0" width="100%" height="100%" fill="white"/>',
    ]
    for p, w in zip(pts, w_all, strict=True):
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = p
        d = (
            f"M {_fmt(x0)} {_fmt(y0)} C {_fmt(x1)} {_fmt(y1)} {_fmt(x2)} {_fmt(y2)} "
            f"{_fmt(x3)} {_fmt(y3)}"
        )
        lines.append(
            f'  <path d="{d}" fill="none" stroke="black" stroke-width="{_fmt(float(w))}" '
            'stroke-linecap="round" stroke-linejoin="round"/>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def parse_svg(text: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Strokes of an SVG written by :func:`to_svg` (or any SVG of ``M x y C x1 y1 x2 y2 x3 y3`` paths).

    Returns:
        (points float32 [N, 4, 2] in pixels, widths float32 [N] full widths, canvas (width, height)).

    Raises:
        UsageError: not SVG, or a path that is not one absolute cubic Bézier.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise UsageError(f"not a valid SVG: {exc}") from None
    if root.tag not in (f"{{{SVG_NS}}}svg", "svg"):
        raise UsageError(f"not an SVG document (root element {root.tag!r})")
    cw = round(float(_NUMBER.findall(root.get("width", "0"))[0]))
    ch = round(float(_NUMBER.findall(root.get("height", "0"))[0]))
    points, widths = [], []
    for path in root.iter():
        if path.tag not in (f"{{{SVG_NS}}}path", "path"):
            continue
        d = path.get("d", "")
        letters = re.sub(r"[^A-Za-z]", "", d)
        nums = [float(v) for v in _NUMBER.findall(d)]
        if letters != "MC" or len(nums) != 8:
            raise UsageError(f"SVG path is not one absolute cubic Bézier ('M x y C ...'): {d[:60]!r}")
        points.append(np.asarray(nums, dtype=np.float32).reshape(4, 2))
        widths.append(float(path.get("stroke-width", "1")))
    pts = np.stack(points) if points else np.zeros((0, 4, 2), np.float32)
    return pts, np.asarray(widths, dtype=np.float32), (cw, ch)
