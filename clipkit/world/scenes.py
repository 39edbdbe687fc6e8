"""The shapes world: deterministic synthetic scenes with exact ground truth.

A scene is 1–K flat-coloured shapes ("red circle", "blue star", ...) on a low-saturation background (flat,
gradient or noise). Every scene carries its image, per-instance *visible* masks (after occlusion), boxes,
category ids, a caption, and a semantic label map, so every method of clipkit can be measured exactly.

Category ids are fixed: ``id = colour_index * len(SHAPES) + shape_index + 1`` over ``COLOURS`` × ``SHAPES`` in
the order listed below (1 = "red circle", 2 = "red square", ..., 48 = "pink cross"); 0 is background.

Coordinates: boxes are XYXY in absolute pixels with exclusive max edges, i.e. the visible mask's pixels
satisfy ``x0 <= col < x1`` and ``y0 <= row < y1`` (so a COCO bbox is ``[x0, y0, x1 - x0, y1 - y0]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageDraw

from clipkit.world.drawings import DrawingStyle, choose_inks, draw_objects

# Saturated, well-separated hues; backgrounds stay low-saturation so an object's colour is never ambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (238, 218, 32),
    "green": (40, 165, 60),
    "cyan": (30, 200, 215),
    "blue": (35, 75, 220),
    "purple": (135, 50, 195),
    "pink": (245, 125, 195),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
CATEGORIES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)  # index + 1 = category id
BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "noise")

_SUPERSAMPLE = 2  # draw at 2x and box-downsample: anti-aliased edges, masks = pixels >= half covered


def category_id(colour: str, shape: str) -> int:
    """Fixed category id (1..48) of ``"<colour> <shape>"``."""
    return list(COLOURS).index(colour) * len(SHAPES) + SHAPES.index(shape) + 1


def category_name(cid: int) -> str:
    """Name of category id ``cid`` (1-based); raises IndexError for 0 or out of range."""
    if not 1 <= cid <= len(CATEGORIES):
        raise IndexError(f"category id {cid} outside 1..{len(CATEGORIES)}")
    return CATEGORIES[cid - 1]


@dataclass
class SceneObject:
    """One object of a scene.

    mask: bool [H, W], the *visible* pixels (later objects occlude earlier ones).
    box: (x0, y0, x1, y1) int pixels, exclusive max edges, tight around ``mask``.
    center: (x, y) float pixels, the visible pixel farthest from the object's edge (always inside ``mask``).
    """

    colour: str
    shape: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    radius: float  # drawn circumradius in pixels
    visible_fraction: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def category_id(self) -> int:
        return category_id(self.colour, self.shape)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class Scene:
    """A generated scene. ``image`` is RGB of ``size`` (W, H); objects are listed in drawing order."""

    image: Image.Image
    objects: list[SceneObject]
    caption: str
    background: str
    seed: int
    index: int
    # (subject index, "left of" | "right of" | "above" | "below", object index) when the caption has one
    relation: tuple[int, str, int] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    @property
    def boxes(self) -> np.ndarray:
        """[N, 4] float32 XYXY pixels."""
        return np.array([o.box for o in self.objects], dtype=np.float32).reshape(-1, 4)

    def label_map(self) -> np.ndarray:
        """uint8 [H, W]: 0 = background, k = category id of the object visible there."""
        w, h = self.size
        out = np.zeros((h, w), dtype=np.uint8)
        for o in self.objects:
            out[o.mask] = o.category_id
        return out


# ---------------------------------------------------------------------------------------------------------
# geometry


def _polygon(shape: str, cx: float, cy: float, r: float, theta: float) -> list[tuple[float, float]] | None:
    """Vertices of ``shape`` with circumradius ``r`` rotated by ``theta`` (None for the circle)."""
    if shape == "circle":
        return None
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = 1.0 if i % 2 == 0 else 0.45
            a = i * math.pi / 5 - math.pi / 2
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        a, b = 0.33, 0.95  # half arm width, half arm length (relative to r)
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
               (-b, -a), (-a, -a)]
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    c, s = math.cos(theta), math.sin(theta)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _shape_mask(shape: str, cx: float, cy: float, r: float, theta: float, w: int, h: int) -> np.ndarray:
    """float32 [h, w] coverage in [0, 1] of the shape (supersampled)."""
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    poly = _polygon(shape, cx * ss, cy * ss, r * ss, theta)
    if poly is None:
        draw.ellipse([(cx - r) * ss, (cy - r) * ss, (cx + r) * ss, (cy + r) * ss], fill=255)
    else:
        draw.polygon(poly, fill=255)
    small = canvas.resize((w, h), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------------
# backgrounds


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour: grey level 50..205 with a tint of at most ±10 per channel."""
    grey = rng.uniform(50, 205)
    return np.clip(grey + rng.uniform(-10, 10, size=3), 0, 255)


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [h, w, 3] background in 0..255."""
    a = _muted_colour(rng)
    if kind == "flat":
        return np.broadcast_to(a, (h, w, 3)).astype(np.float32)
    if kind == "gradient":
        b = _muted_colour(rng)
        ang = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xs / max(w - 1, 1) - 0.5) * math.cos(ang) + (ys / max(h - 1, 1) - 0.5) * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)
    if kind == "noise":
        # grey (colourless) noise, partly low-frequency, so it never reads as an object colour
        grain = rng.normal(0, rng.uniform(6, 18), size=(h, w)).astype(np.float32)
        cs = max(2, min(w, h) // 8)
        coarse = rng.normal(0, rng.uniform(6, 16), size=(cs, cs)).astype(np.float32)
        coarse = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        return np.clip(a + (grain + coarse)[..., None], 0, 255).astype(np.float32)
    raise ValueError(f"unknown background {kind!r}; known: {', '.join(BACKGROUNDS)}")


# ---------------------------------------------------------------------------------------------------------
# captions


def relation(a: SceneObject, b: SceneObject) -> str | None:
    """Spatial relation of ``a`` to ``b`` when unambiguous, else None.

    "left of" needs a's box to end before b's box starts horizontally *and* the horizontal offset of the
    centres to dominate the vertical one; likewise for "right of", "above", "below".
    """
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    dx = (bx0 + bx1 - ax0 - ax1) / 2
    dy = (by0 + by1 - ay0 - ay1) / 2
    if abs(dx) > 1.5 * abs(dy):
        if ax1 <= bx0:
            return "left of"
        if bx1 <= ax0:
            return "right of"
    if abs(dy) > 1.5 * abs(dx):
        if ay1 <= by0:
            return "above"
        if by1 <= ay0:
            return "below"
    return None


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_caption(objects: list[SceneObject], rng: np.random.Generator, article: bool = True,
                 names: list[str] | None = None) -> tuple[str, tuple[int, str, int] | None]:
    """Caption naming every object once; a spatial relation only for 2-object scenes where unambiguous.

    Returns (caption, relation triple or None). ``article=False`` gives bare names
    ("red circle and blue star"). ``names`` overrides the objects' names (e.g. "star" for a black drawing).
    """
    shown = names if names is not None else [o.name for o in objects]

    def np_(k: int) -> str:
        name = shown[k]
        if not article:
            return name
        return ("an " if name[0] in "aeiou" else "a ") + name

    order = list(rng.permutation(len(objects)))
    if len(objects) == 2:
        i, j = order
        rel = relation(objects[i], objects[j])
        if rel is not None:
            return f"{np_(i)} {rel} {np_(j)}", (int(i), rel, int(j))
    return _join([np_(k) for k in order]), None


# ---------------------------------------------------------------------------------------------------------
# the generator


@dataclass(frozen=True)
class SceneConfig:
    """Generator settings. ``size`` is (W, H) pixels, or ``size_range`` draws a square side per scene."""

    size: tuple[int, int] = (224, 224)
    size_range: tuple[int, int] | None = None
    min_objects: int = 1
    max_objects: int = 4
    min_visible: float = 0.6  # every object keeps at least this fraction of its drawn area visible
    backgrounds: tuple[str, ...] = BACKGROUNDS
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    # opt-in (0 keeps the default stream): chance that a new object repeats the shape of an earlier one (and,
    # a third of those times, its colour too) — scenes where only a relation or superlative tells them apart
    repeat_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ValueError("need 1 <= min_objects <= max_objects <= 8")
        sizes = self.size_range or self.size
        if min(sizes) < 32 or max(sizes) > 2048:
            raise ValueError("image sizes must lie in 32..2048 px")


def _scene_rng(seed: int, index: int) -> np.random.Generator:
    # one independent stream per (seed, index): scene i is the same whatever n or order it is generated in
    return np.random.default_rng([int(seed), int(index), 0x5EED])


def generate_scene(seed: int = 0, index: int = 0, config: SceneConfig | None = None, *,
                   n_objects: int | None = None, article: bool = True,
                   drawing: bool | DrawingStyle = False) -> Scene:
    """Generate scene ``index`` of the stream ``seed`` (deterministic in (seed, index, config)).

    ``drawing`` (opt-in; True or a :class:`clipkit.world.drawings.DrawingStyle`): the same scene — objects,
    masks, boxes, caption order — rendered as a line drawing on plain paper; objects drawn in black ink are
    captioned by shape alone ("a star"). ``meta`` then holds ``style = "drawing"``, ``names`` (the captioned
    names) and ``black_ink`` (per object). The default (False) stream is unchanged.
    """
    cfg = config or SceneConfig()
    rng = _scene_rng(seed, index)
    if cfg.size_range is not None:
        side = int(rng.integers(cfg.size_range[0], cfg.size_range[1] + 1))
        w = h = side
    else:
        w, h = cfg.size
    k = int(n_objects) if n_objects is not None else int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    bg_kind = str(rng.choice(cfg.backgrounds))
    canvas = _background(bg_kind, w, h, rng)

    side = min(w, h)
    # radius range shrinks with the object count so that up to 4 objects fit with little overlap
    r_lo, r_hi = {1: (0.16, 0.36), 2: (0.12, 0.24)}.get(k, (0.10, 0.19))
    used: set[tuple[str, str]] = set()
    cover: list[np.ndarray] = []  # full (unoccluded) coverage per placed object
    specs: list[tuple[str, str, float, float, float]] = []
    for _ in range(k):
        for _attempt in range(30):
            colour = str(rng.choice(cfg.colours))
            shape = str(rng.choice(cfg.shapes))
            repeat = bool(cfg.repeat_prob > 0 and specs and rng.random() < cfg.repeat_prob)
            if repeat:
                prev = specs[int(rng.integers(len(specs)))]
                shape, colour = prev[1], (prev[0] if rng.random() < 1 / 3 else colour)
            if (colour, shape) in used and not repeat:
                continue
            r = float(rng.uniform(r_lo, r_hi) * side)
            r = max(r, 5.0)
            cx = float(rng.uniform(r, w - r))
            cy = float(rng.uniform(r, h - r))
            theta = float(rng.uniform(-0.35, 0.35)) if shape in ("square", "cross") else float(
                rng.uniform(0, 2 * math.pi))
            if shape == "circle":
                theta = 0.0
            cov = _shape_mask(shape, cx, cy, r, theta, w, h)
            full = cov >= 0.5
            if full.sum() < 12:
                continue
            # the new object goes on top: every earlier object must keep min_visible of its area
            ok = True
            for pi, prev in enumerate(cover):
                vis = (prev >= 0.5) & ~full
                for later in cover[pi + 1:]:
                    vis &= ~(later >= 0.5)
                if vis.sum() < cfg.min_visible * (prev >= 0.5).sum():
                    ok = False
                    break
            if ok:
                used.add((colour, shape))
                cover.append(cov)
                specs.append((colour, shape, r, cx, cy, theta))
                break
    # composite in drawing order with anti-aliased edges
    objects: list[SceneObject] = []
    visible = [c >= 0.5 for c in cover]
    for i in range(len(cover)):
        for j in range(i + 1, len(cover)):
            visible[i] = visible[i] & ~(cover[j] >= 0.5)
    inks = []
    for (colour, *_geometry), cov in zip(specs, cover, strict=True):
        rgb = np.clip(np.array(COLOURS[colour], np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
        inks.append(rgb)
        canvas = canvas * (1 - cov[..., None]) + rgb * cov[..., None]
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), "RGB")
    for (colour, shape, r, _cx, _cy, _theta), cov, vis in zip(specs, cover, visible, strict=True):
        ys, xs = np.nonzero(vis)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        dist = cv2.distanceTransform(np.pad(vis, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
        cy_, cx_ = np.unravel_index(int(np.argmax(dist)), dist.shape)
        objects.append(SceneObject(colour=colour, shape=shape, mask=vis, box=box,
                                   center=(float(cx_) + 0.5, float(cy_) + 0.5), radius=r,
                                   visible_fraction=float(vis.sum() / max((cov >= 0.5).sum(), 1))))
    meta: dict = {}
    if drawing:
        style = drawing if isinstance(drawing, DrawingStyle) else DrawingStyle()
        draw_rng = np.random.default_rng([int(seed), int(index), 0xD8A3])  # own stream: layout = photo's
        ink, black = choose_inks(inks, draw_rng, style)
        geometry = [(sh, cx, cy, r, th) for _c, sh, r, cx, cy, th in specs]
        image = draw_objects(geometry, ink, (w, h), draw_rng, style)
        names = [o.shape if b else o.name for o, b in zip(objects, black, strict=True)]
        meta = {"style": "drawing", "names": names, "black_ink": black}
    caption, rel = make_caption(objects, rng, article=article, names=meta.get("names"))
    return Scene(image=image, objects=objects, caption=caption, background=bg_kind, seed=int(seed),
                 index=int(index), relation=rel, meta=meta)


def generate(n: int, seed: int = 0, config: SceneConfig | None = None, *, start: int = 0,
             n_objects: int | None = None) -> Iterator[Scene]:
    """Yield scenes ``start .. start+n-1`` of the stream ``seed``."""
    for i in range(start, start + n):
        yield generate_scene(seed, i, config, n_objects=n_objects)
