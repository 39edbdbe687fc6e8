"""Shapes-world objects as line drawings: outline strokes of varying width and wobble on plain paper.

A model trained only on filled, coloured shapes has never seen a line drawing (the bundled shapes-clip names
any drawing "star"), so it cannot judge a CLIPasso sketch. This module draws the objects of a scene the way a
person sketches them: each object's outline as one closed stroke whose width varies along it and whose path
wobbles (low-frequency displacement along the normal, a slightly open or overshooting end), in black or in the
object's own colour, on plain paper (white, cream or light grey). Later objects hide the lines of earlier ones
(their inside is paper), so visible masks are those of the filled scene.

Used through ``clipkit.world.scenes.generate_scene(..., drawing=True)`` (or a :class:`DrawingStyle`), which
keeps the photo scene's layout (same objects, sizes, positions, caption order) and replaces only the pixels.
Captions name what a viewer can see: "a red star" for a red outline, "a star" for a black one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

PAPERS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (250, 246, 236), (236, 236, 236))
_SUPERSAMPLE = 3  # draw at 3x and box-downsample: smooth anti-aliased lines


@dataclass(frozen=True)
class DrawingStyle:
    """How drawings look. Widths are full stroke widths as fractions of the image side (0.0134 = 3 px at 224,
    CLIPasso's width); ``wobble`` the largest displacement of the line as a fraction of the object's radius."""

    width_range: tuple[float, float] = (0.006, 0.022)
    width_variation: float = 0.35     # the width varies along the stroke by up to ±35 %
    wobble_range: tuple[float, float] = (0.0, 0.06)
    p_black: float = 0.6              # probability an object is drawn in black ink (caption without colour)
    papers: tuple[tuple[int, int, int], ...] = PAPERS


def _outline(shape: str, cx: float, cy: float, r: float, theta: float, step: float) -> np.ndarray:
    """Closed outline float [M, 2] (x, y) of the shape, points about ``step`` px apart (first point repeated)."""
    from clipkit.world.scenes import _polygon

    poly = _polygon(shape, cx, cy, r, theta)
    if poly is None:
        n = max(24, int(2 * math.pi * r / step))
        a = np.linspace(0, 2 * math.pi, n + 1)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)
    pts = np.asarray([*poly, poly[0]], dtype=np.float64)
    out = []
    for p, q in itertools.pairwise(pts):
        k = max(2, int(np.linalg.norm(q - p) / step))
        t = np.linspace(0, 1, k, endpoint=False)[:, None]
        out.append(p + t * (q - p))
    out.append(pts[:1])
    return np.concatenate(out)


def _smooth_noise(s: np.ndarray, rng: np.random.Generator, waves: int = 3) -> np.ndarray:
    """A random smooth periodic function of the arc-length fraction ``s`` in [0, 1], values in about [−1, 1]."""
    out = np.zeros_like(s)
    for k in range(1, waves + 1):
        out += rng.normal(0, 1.0 / k) * np.sin(2 * math.pi * (k + rng.integers(0, 3)) * s + rng.uniform(0, 6.3))
    return out / max(1.0, float(np.abs(out).max()))


def _stroke_points(
    shape: str, cx: float, cy: float, r: float, theta: float, wobble: float, rng: np.random.Generator
) -> np.ndarray:
    """The hand-drawn path float [M, 2]: outline, displaced along its normal, started at a random point, with a
    small gap or overshoot at the end."""
    pts = _outline(shape, cx, cy, r, theta, step=max(1.0, r / 24))
    pts = np.roll(pts[:-1], -int(rng.integers(0, len(pts) - 1)), axis=0)
    pts = np.concatenate([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)]) / max(float(seg.sum()), 1e-9)
    tangent = np.gradient(pts, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    pts = pts + (wobble * r * _smooth_noise(s, rng))[:, None] * normal
    end = rng.uniform(-0.04, 0.06)  # < 0: the stroke stops short of its start; > 0: it overshoots
    pts = pts[:max(2, int(len(pts) * (1 + end)))] if end < 0 else np.concatenate([pts, pts[1:1 + int(len(pts) * end)]])
    return pts


def _draw_stroke(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: float, variation: float,
                 colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    """Draw a polyline (already in supersampled pixels) with a width varying smoothly along it, round joins."""
    s = np.linspace(0, 1, len(pts))
    widths = width * (1 + variation * _smooth_noise(s, rng, waves=2))
    for (p, q), w in zip(itertools.pairwise(pts), widths[:-1], strict=True):
        draw.line([tuple(p), tuple(q)], fill=colour, width=max(1, round(w)))
        h = w / 2
        draw.ellipse([q[0] - h, q[1] - h, q[0] + h, q[1] + h], fill=colour)


def draw_objects(
    specs: Sequence[tuple[str, float, float, float, float]],
    inks: Sequence[tuple[int, int, int]],
    size: tuple[int, int],
    rng: np.random.Generator,
    style: DrawingStyle | None = None,
) -> Image.Image:
    """Line drawing of objects on plain paper.

    Args:
        specs: per object in drawing order, (shape, cx, cy, r, theta) in pixels / radians as the scene
            generator places it.
        inks: RGB ink per object (black or the object's colour).
        size: (W, H) of the image.
    Returns:
        RGB PIL image of ``size``.
    """
    from clipkit.world.scenes import _polygon

    st = style or DrawingStyle()
    w, h = size
    ss = _SUPERSAMPLE
    paper = tuple(int(c) for c in st.papers[int(rng.integers(0, len(st.papers)))])
    canvas = Image.new("RGB", (w * ss, h * ss), paper)
    draw = ImageDraw.Draw(canvas)
    side = min(w, h)
    for (shape, cx, cy, r, theta), ink in zip(specs, inks, strict=True):
        # hide the lines of earlier objects under this one
        poly = _polygon(shape, cx * ss, cy * ss, r * ss, theta)
        if poly is None:
            draw.ellipse([(cx - r) * ss, (cy - r) * ss, (cx + r) * ss, (cy + r) * ss], fill=paper)
        else:
            draw.polygon(poly, fill=paper)
        width = rng.uniform(*st.width_range) * side * ss
        wobble = rng.uniform(*st.wobble_range)
        pts = _stroke_points(shape, cx, cy, r, theta, wobble, rng) * ss
        _draw_stroke(draw, pts, width, st.width_variation, tuple(int(c) for c in ink), rng)
    return canvas.resize((w, h), Image.Resampling.BOX)


def choose_inks(
    colours: Sequence[np.ndarray], rng: np.random.Generator, style: DrawingStyle | None = None
) -> tuple[list[tuple[int, int, int]], list[bool]]:
    """Ink per object: black-ish (grey 0..50) with ``style.p_black``, else the object's own colour.

    Returns (RGB inks, is_black flags).
    """
    st = style or DrawingStyle()
    inks, black = [], []
    for rgb in colours:
        is_black = bool(rng.random() < st.p_black)
        grey = int(rng.integers(0, 51))
        inks.append((grey, grey, grey) if is_black else tuple(round(c) for c in rgb))
        black.append(is_black)
    return inks, black


def _cubic(ctrl: np.ndarray, n: int = 24) -> np.ndarray:
    """Points float [n, 2] along the cubic Bézier curve with control points ``ctrl`` [4, 2]."""
    t = np.linspace(0, 1, n)[:, None]
    return ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1] + 3 * (1 - t) * t**2 * ctrl[2]
            + t**3 * ctrl[3])


def scribble_objects(masks: Sequence[np.ndarray], rng: np.random.Generator,
                     style: DrawingStyle | None = None) -> Image.Image:
    """Scribbles on plain paper: what a sketch looks like when it does *not* trace the objects' outlines.

    Per scene, one of two kinds, each object by its visible mask (bool [H, W]): 6–14 short random-walk strokes
    that stay inside it (a filled-in blob of ink where the drawing has an outline), or 4–10 long cubic curves
    with control points over its box and a margin of 20 % (lines across the object, hatching). With
    probability 0.5 a few dashes are scattered over the paper. Black-ish ink, stroke widths as
    :class:`DrawingStyle`'s. Training uses these as the pairs' negatives (:mod:`clipkit.training.pairs`): a
    scribble over an object must not pass for its photo.
    """
    st = style or DrawingStyle()
    h, w = masks[0].shape if masks else (96, 96)
    ss = _SUPERSAMPLE
    paper = tuple(int(c) for c in st.papers[int(rng.integers(0, len(st.papers)))])
    canvas = Image.new("RGB", (w * ss, h * ss), paper)
    draw = ImageDraw.Draw(canvas)
    side = min(w, h)
    grey = int(rng.integers(0, 51))
    ink = (grey, grey, grey)
    curves = bool(rng.random() < 0.5)

    def stroke(pts: np.ndarray, variation: float = st.width_variation) -> None:
        _draw_stroke(draw, pts * ss, rng.uniform(*st.width_range) * side * ss, variation, ink, rng)

    for mask in masks:
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        if curves:
            lo, hi = np.array([xs.min(), ys.min()], float), np.array([xs.max(), ys.max()], float)
            margin = 0.2 * (hi - lo + 1)
            for _ in range(int(rng.integers(4, 11))):
                stroke(_cubic(rng.uniform(lo - margin, hi + margin, (4, 2))))
            continue
        reach = max(2.0, 0.25 * math.sqrt(len(xs)))
        for _ in range(int(rng.integers(6, 15))):
            k = int(rng.integers(len(xs)))
            p = np.array([xs[k], ys[k]], float)
            pts = [p]
            for _step in range(int(rng.integers(2, 6))):
                q = p + rng.normal(0, reach, 2)
                qi = np.clip(np.round(q).astype(int), 0, [w - 1, h - 1])
                if mask[qi[1], qi[0]]:
                    p = q
                    pts.append(p)
            if len(pts) > 1:
                stroke(np.asarray(pts))
    if rng.random() < 0.5:
        for _ in range(int(rng.integers(4, 16))):
            p = rng.uniform(0, 1, 2) * (w, h)
            stroke(np.stack([p, p + rng.normal(0, 0.04 * side, 2)]), 0.0)
    return canvas.resize((w, h), Image.Resampling.BOX)
