"""Export generated scenes as a dataset folder (COCO instances + captions, semantic masks, referring).

Layout of ``OUT/``::

    images/scene_000000.png     RGB scenes
    masks/scene_000000.png      semantic masks: palette PNG whose *values* are category ids (0 = background)
    instances.json              COCO instances: categories 1..48 ("red circle", ...), XYWH bboxes, RLE masks
    captions.json               COCO captions: one caption per image
    referring.json              [{"image", "expression", "box": [x0, y0, x1, y1], "distractor", "category_id",
                                  "ann_id"}]; "image" is the file name under images/
    world.json                  generator settings (seed, n, size, max_objects) and the category list

Boxes in referring.json are XYXY absolute pixels with exclusive max edges; COCO bboxes are [x0, y0, w, h].
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from clipkit.world.scenes import CATEGORIES, COLOURS, SHAPES, Scene, SceneConfig, generate_scene
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


def referring_entries(scene: Scene, file_name: str, first_ann_id: int) -> list[dict]:
    """One referring expression per object: "the <colour> <shape>".

    ``distractor`` is True when another object of the scene shares the target's colour or shape, so a method
    has to bind both words to find it (categories are unique within a scene, so the expression is never
    ambiguous).
    """
    out = []
    for i, o in enumerate(scene.objects):
        others = [p for j, p in enumerate(scene.objects) if j != i]
        distractor = any(p.colour == o.colour or p.shape == o.shape for p in others)
        out.append({"image": file_name, "expression": f"the {o.name}", "box": [int(v) for v in o.box],
                    "distractor": bool(distractor), "category_id": o.category_id,
                    "ann_id": first_ann_id + i})
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


def export(out: str | Path, n: int = 100, seed: int = 0, *, size: int | tuple[int, int] = 224,
           size_range: tuple[int, int] | None = None, min_objects: int = 1, max_objects: int = 4,
           progress: Callable[[int], None] | None = None, overwrite: bool = False) -> Path:
    """Generate scenes ``0..n-1`` of stream ``seed`` and write them under ``out`` (see module docstring).

    ``size`` is the square side (or (W, H)) in pixels; ``size_range=(lo, hi)`` draws a square side per scene
    instead. ``progress`` is called with 1 after each scene. Returns the output folder. A folder that is not
    empty is refused (stale images of a larger earlier export would join the new one) unless ``overwrite``,
    which first removes an earlier export's own files — and refuses a folder holding anything else.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    _clear(Path(out), overwrite)
    wh = (size, size) if isinstance(size, int) else tuple(size)
    cfg = SceneConfig(size=wh, size_range=size_range, min_objects=min_objects, max_objects=max_objects)
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
         "min_objects": min_objects, "max_objects": max_objects, "categories": list(CATEGORIES)}, indent=1))
    return out
