"""Export generated scenes as a dataset folder (COCO instances + captions, semantic masks, referring).

Layout of ``OUT/``::

    images/scene_000000.png     RGB scenes
    masks/scene_000000.png      semantic masks: palette PNG whose *values* are category ids (0 = background)
    instances.json              COCO instances: categories 1..48 ("red circle", ...), XYWH bboxes, RLE masks
    captions.json               COCO captions: one caption per image
    referring.json              [{"image", "expression", "box": [x0, y0, x1, y1] | null, "distractor",
                                  "category_id", "ann_id", "type"}]; "image" is the file name under images/;
                                  type: plain | attribute | relation | superlative | absent (box null)
    world.json                  generator settings (seed, n, size, max_objects) and the category list

Boxes in referring.json are XYXY absolute pixels with exclusive max edges; COCO bboxes are [x0, y0, w, h].
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from clipkit.world.scenes import CATEGORIES, COLOURS, SHAPES, Scene, SceneConfig, SceneObject, generate_scene, relation
from clipkit.writers import atomic_write_text

STEM = "scene_{:06d}"


def _palette() -> list[int]:
    """Palette for semantic masks: 0 black, category k its colour (shade varies with the shape)."""
    pal = [0, 0, 0]
    for name in CATEGORIES:
        colour, shape = name.split(" ")
        f = 1.0 - 0.1 * SHAPES.index(shape)
        pal += [int(c * f) for c in COLOURS[colour]]
    return pal + [255, 255, 255] * (256 - len(pal) // 3)


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _phrase_for(group: list[SceneObject], target: SceneObject) -> str:
    """How to name ``target`` without telling it from the rest of ``group`` (which shares the words used)."""
    if all(o.name == target.name for o in group):
        return f"the {target.name}"
    if all(o.shape == target.shape for o in group):
        return f"the {target.shape}"
    return f"the {target.colour} one"


def _apart(a: SceneObject, b: SceneObject, gap: float = 4.0) -> bool:
    """The boxes are at least ``gap`` px apart on one axis (the objects do not touch or overlap)."""
    return (max(a.box[0], b.box[0]) - min(a.box[2], b.box[2]) >= gap
            or max(a.box[1], b.box[1]) - min(a.box[3], b.box[3]) >= gap)


def _groups(objects: list[SceneObject]) -> list[list[SceneObject]]:
    """Sets of 2+ objects that one name covers: the same category, the same shape or the same colour; only sets
    whose members lie apart (touching objects of one colour are one score-map component for ``ground``'s
    proposals, so such a set would measure the proposals, not the relation)."""
    out, seen = [], set()
    for key in (lambda o: o.name, lambda o: o.shape, lambda o: o.colour):
        buckets: dict[str, list[SceneObject]] = {}
        for o in objects:
            buckets.setdefault(key(o), []).append(o)
        for g in buckets.values():
            ids = frozenset(id(o) for o in g)
            if len(g) >= 2 and ids not in seen and all(_apart(a, b) for i, a in enumerate(g) for b in g[i + 1:]):
                seen.add(ids)
                out.append(g)
    return out


EXPORT_ENTRIES = frozenset({"images", "masks", "instances.json", "captions.json", "referring.json", "world.json"})


def _clear(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then remove only an earlier export's own files."""
    import shutil

    from clipkit.errors import UsageError

    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UsageError(f"{out} is not empty: pass --overwrite to replace an earlier export there")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORT_ENTRIES)
    if foreign:
        raise UsageError(f"{out} holds files that are not a shapes-world export's ({', '.join(foreign[:3])}): "
                         "export into an empty folder")
    for name in EXPORT_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _cx(o: SceneObject) -> float:
    return (o.box[0] + o.box[2]) / 2


def _cy(o: SceneObject) -> float:
    return (o.box[1] + o.box[3]) / 2


def _barea(o: SceneObject) -> float:
    return float((o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))


def _dist(a: SceneObject, b: SceneObject) -> float:
    return float(np.hypot(_cx(a) - _cx(b), _cy(a) - _cy(b)))


def _relation_holds(kind: str, t: SceneObject, a: SceneObject, others: list[SceneObject], margin: float) -> bool:
    """``t`` is clearly ``kind`` ``a`` and no other object of its group is (ReCLIP's centre/area rules)."""
    if kind in ("left of", "right of", "above", "below"):
        if relation(t, a) != kind:  # unambiguous in words: boxes apart, offset dominant
            return False
        key = _cx if kind in ("left of", "right of") else _cy
        sign = -1 if kind in ("left of", "above") else 1
        return all(sign * (key(d) - key(a)) < -margin for d in others)
    if kind == "next to":
        return all(_dist(t, a) <= 0.6 * _dist(d, a) for d in others)
    if kind == "bigger than":
        return _barea(t) >= 1.4 * _barea(a) and all(_barea(d) * 1.2 <= _barea(a) for d in others)
    if kind == "smaller than":
        return _barea(t) * 1.4 <= _barea(a) and all(_barea(d) >= 1.2 * _barea(a) for d in others)
    raise ValueError(kind)


_SUPERLATIVE_KEYS = {"leftmost": (_cx, 1), "rightmost": (_cx, -1), "topmost": (_cy, 1), "bottommost": (_cy, -1),
                     "biggest": (_barea, -1), "smallest": (_barea, 1)}
_SUPERLATIVE_TEXT = {"leftmost": ("the leftmost {x}", "the {x} on the left"),
                     "rightmost": ("the rightmost {x}", "the {x} on the right"),
                     "topmost": ("the topmost {x}", "the {x} at the top"),
                     "bottommost": ("the bottommost {x}", "the {x} at the bottom"),
                     "biggest": ("the biggest {x}", "the largest {x}"),
                     "smallest": ("the smallest {x}", "the smallest {x}")}
_ORDINAL_TEXT = {"leftmost": "from the left", "rightmost": "from the right", "topmost": "from the top",
                 "bottommost": "from the bottom"}


def _ordered(group: list[SceneObject], kind: str, margin: float) -> list[SceneObject] | None:
    """``group`` sorted by ``kind`` (first = the most), or None when two neighbours are too close to call."""
    key, sign = _SUPERLATIVE_KEYS[kind]
    order = sorted(group, key=lambda o: sign * key(o))
    for a, b in itertools.pairwise(order):
        gap = abs(key(a) - key(b))
        if (kind in ("biggest", "smallest") and max(key(a), key(b)) < 1.3 * min(key(a), key(b))) or \
                (kind not in ("biggest", "smallest") and gap < margin):
            return None
    return order


def _entry(file_name: str, expression: str, kind: str, o: SceneObject | None, ann_id: int | None,
           distractor: bool) -> dict:
    return {"image": file_name, "expression": expression, "box": [int(v) for v in o.box] if o else None,
            "distractor": bool(distractor), "category_id": o.category_id if o else None, "ann_id": ann_id,
            "type": kind}


def referring_entries(scene: Scene, file_name: str, first_ann_id: int,
                      rng: np.random.Generator | None = None) -> list[dict]:
    """The scene's referring expressions, each with a ``type``:

    * ``plain``: "the <colour> <shape>", one per object; ``distractor`` when another object shares its colour or
      shape (so both words must be bound);
    * ``attribute``: one word that alone singles the object out ("the star", "the red one"), at most one;
    * ``relation``: "<group name> <relation> <anchor>" where the group name ("the circle", "the red one") covers
      2+ objects and only the target satisfies the relation (left of / right of / above / below: boxes apart
      with the offset dominant, every other group member on the wrong side of the anchor's centre by a margin;
      next to: ≤ 0.6 × the others' centre distance; bigger / smaller than: box area ratio ≥ 1.4 and the others
      ≥ 1.2 the other way), at most two; the objects the group name covers must lie apart (boxes ≥ 4 px apart);
    * ``superlative``: "the leftmost circle", "the red one at the top", "the second star from the left" (margin
      between neighbours: 8 % of the image side in position, 1.3 × in box area), at most two;
    * ``absent``: a category (or, one time in three, a shape) not in the scene; ``box`` is ``null``.

    ``rng`` picks among the candidates (default: seeded by the scene's seed and index).
    """
    rng = rng if rng is not None else np.random.default_rng([scene.seed, scene.index, 0xEF])
    objs = scene.objects
    out = []
    for i, o in enumerate(objs):
        others = [p for j, p in enumerate(objs) if j != i]
        distractor = any(p.colour == o.colour or p.shape == o.shape for p in others)
        if any(p.name == o.name for p in others):  # a repeated category: only a relation can name it
            continue
        out.append(_entry(file_name, f"the {o.name}", "plain", o, first_ann_id + i, distractor))
    ann = {id(o): first_ann_id + i for i, o in enumerate(objs)}
    margin = 0.08 * min(scene.size)
    attrs = []
    for o in objs:
        if sum(p.shape == o.shape for p in objs) == 1:
            attrs.append(_entry(file_name, f"the {o.shape}", "attribute", o, ann[id(o)], len(objs) > 1))
        if sum(p.colour == o.colour for p in objs) == 1 and len(objs) > 1:
            attrs.append(_entry(file_name, f"the {o.colour} one", "attribute", o, ann[id(o)], True))
    rels, sups = [], []
    for group in _groups(objs):
        for t in group:
            others = [d for d in group if d is not t]
            for a in objs:
                if any(a is g for g in group) or sum(p.name == a.name for p in objs) > 1:
                    continue
                for kind in ("left of", "right of", "above", "below", "next to", "bigger than", "smaller than"):
                    if _relation_holds(kind, t, a, others, margin):
                        text = f"{_phrase_for(group, t)} {kind} the {a.name}"
                        rels.append(_entry(file_name, text, "relation", t, ann[id(t)], True))
        for kind, (first, second) in _SUPERLATIVE_TEXT.items():
            order = _ordered(group, kind, margin)
            if order is None:
                continue
            name = _phrase_for(group, order[0])[4:]  # without "the "
            pattern = first if rng.random() < 0.5 else second
            sups.append(_entry(file_name, pattern.format(x=name), "superlative", order[0], ann[id(order[0])], True))
            if len(order) >= 3 and kind in _ORDINAL_TEXT:
                sups.append(_entry(file_name, f"the second {name} {_ORDINAL_TEXT[kind]}", "superlative",
                                   order[1], ann[id(order[1])], True))
    present = {o.name for o in objs}
    absent_names = [c for c in CATEGORIES if c not in present]
    if rng.random() < 1 / 3 and any(all(o.shape != s for o in objs) for s in SHAPES):
        shape = str(rng.choice([s for s in SHAPES if all(o.shape != s for o in objs)]))
        absents = [_entry(file_name, f"the {shape}", "absent", None, None, False)]
    else:
        near = [c for c in absent_names if any(c.split()[0] == o.colour or c.split()[1] == o.shape for o in objs)]
        pool = near if near and rng.random() < 0.5 else absent_names
        absents = [_entry(file_name, f"the {rng.choice(pool)}", "absent", None, None, False)]
    for pool, k in ((attrs, 1), (rels, 2), (sups, 2)):
        if pool:
            picks = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
            out += [pool[int(j)] for j in sorted(picks)]
    return out + absents


def export(out: str | Path, n: int = 100, seed: int = 0, *, size: int | tuple[int, int] = 224,
           size_range: tuple[int, int] | None = None, min_objects: int = 1, max_objects: int = 4,
           repeat_prob: float = 0.0, progress: Callable[[int], None] | None = None,
           overwrite: bool = False) -> Path:
    """Generate scenes ``0..n-1`` of stream ``seed`` and write them under ``out`` (see module docstring).

    ``size`` is the square side (or (W, H)) in pixels; ``size_range=(lo, hi)`` draws a square side per scene
    instead. ``repeat_prob`` > 0 makes scenes where objects repeat a shape or a whole category (see
    :class:`~clipkit.world.scenes.SceneConfig`; 0 keeps the default stream). ``progress`` is called with 1
    after each scene. Returns the output folder. A folder that is not empty is refused (stale images of a
    larger earlier export would join the new one) unless ``overwrite``, which first removes an earlier export's
    own files — and refuses a folder holding anything else.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    _clear(Path(out), overwrite)
    wh = (size, size) if isinstance(size, int) else tuple(size)
    cfg = SceneConfig(size=wh, size_range=size_range, min_objects=min_objects, max_objects=max_objects,
                      repeat_prob=repeat_prob)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": name, "supercategory": name.split(" ")[1],
                   "colour": name.split(" ")[0], "shape": name.split(" ")[1]}
                  for k, name in enumerate(CATEGORIES)]
    images, anns, caps, refs = [], [], [], []
    palette = _palette()
    for i in range(n):
        scene = generate_scene(seed, i, cfg)
        stem = STEM.format(i)
        fname = stem + ".png"
        w, h = scene.size
        scene.image.save(out / "images" / fname)
        sem = Image.fromarray(scene.label_map(), "P")
        sem.putpalette(palette)
        sem.save(out / "masks" / fname)
        img_id = i + 1
        images.append({"id": img_id, "file_name": fname, "width": w, "height": h,
                       "background": scene.background})
        caps.append({"id": img_id, "image_id": img_id, "caption": scene.caption})
        refs += referring_entries(scene, fname, len(anns) + 1)
        for o in scene.objects:
            x0, y0, x1, y1 = o.box
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": o.category_id,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": o.area, "iscrowd": 0,
                         "segmentation": _rle(o.mask), "center": list(o.center)})
        if progress is not None:
            progress(1)
    info = {"description": "clipkit shapes world", "seed": seed, "n": n}
    atomic_write_text(out / "instances.json", json.dumps(
        {"info": info, "images": images, "annotations": anns, "categories": categories}))
    atomic_write_text(out / "captions.json", json.dumps(
        {"info": info, "images": images, "annotations": caps}))
    atomic_write_text(out / "referring.json", json.dumps(refs, indent=0))
    atomic_write_text(out / "world.json", json.dumps(
        {"seed": seed, "n": n, "size": list(wh), "size_range": list(size_range) if size_range else None,
         "min_objects": min_objects, "max_objects": max_objects, "repeat_prob": repeat_prob,
         "categories": list(CATEGORIES)}, indent=1))
    return out
