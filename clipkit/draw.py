"""Box artefacts of detect and ground: annotated images (boxes + ``label: score``) and COCO results JSON."""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["BoxArtefacts", "draw_boxes", "palette"]


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hue steps, fixed saturation/value), deterministic."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, xyxy: np.ndarray, captions: Sequence[str],
               groups: Sequence[int] | None = None, *, width: int | None = None) -> Image.Image:
    """Return an RGB copy of ``image`` with each box of ``xyxy`` (``[N,4]`` XYXY, pixels of ``image``)
    outlined and captioned with ``captions[i]`` on a filled tag above the box (inside it at the top edge).

    ``groups[i]`` picks the colour (same label/phrase → same colour); default: one colour per box.
    """
    img = image.convert("RGB").copy()
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    if len(captions) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(captions)} captions")
    groups = list(range(len(boxes))) if groups is None else [int(g) for g in groups]
    colours = palette(max(groups, default=-1) + 1)
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


class BoxArtefacts:
    """Per-run artefacts of ``detect``/``ground``: annotated PNGs in ``out_dir`` and a COCO results JSON.

    ``tap(results)`` passes results through unchanged, saving each one's annotated PNG (``<stem>.png``, a
    numeric suffix when two inputs share a stem) and collecting COCO results; ``close()`` writes ``coco``
    atomically. COCO ids: ``coco_categories`` (an instances.json: category name → id, image file name → id),
    else labels numbered from 1 and images numbered in input order.
    """

    def __init__(self, labels: Sequence[str] = (), *, out_dir: str | Path | None = None,
                 coco: str | Path | None = None, coco_categories: str | Path | None = None) -> None:
        from clipkit.errors import UsageError

        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.coco = Path(coco) if coco is not None else None
        self.label_ids = {name: i + 1 for i, name in enumerate(labels)}
        self.image_ids: dict[str, int] = {}
        self._fixed_images = False
        if coco_categories is not None:
            try:
                inst = json.loads(Path(coco_categories).read_text())
                self.label_ids = {c["name"]: int(c["id"]) for c in inst["categories"]}
                self.image_ids = {Path(im["file_name"]).name: int(im["id"]) for im in inst.get("images", [])}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UsageError(f"cannot read COCO categories from {coco_categories}: {e}") from None
            self._fixed_images = bool(self.image_ids)
            missing = [name for name in labels if name not in self.label_ids]
            if missing:
                raise UsageError(f"label(s) {missing} are not categories of {coco_categories}")
        self.records: list[dict] = []
        self._stems: set[str] = set()
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def tap(self, results: Iterable[Any]) -> Iterator[Any]:
        for res in results:
            det = getattr(res, "detections", res)  # Grounding wraps its Detections
            if hasattr(det, "xyxy"):
                if self.out_dir is not None:
                    self._save_png(res, det)
                if self.coco is not None:
                    self._collect(det)
            yield res

    def _save_png(self, res: Any, det: Any) -> None:
        from clipkit.images import load_image
        from clipkit.writers import save_image

        stem = Path(det.path).stem or "image"
        name, k = stem, 1
        while name in self._stems:
            name, k = f"{stem}_{k}", k + 1
        self._stems.add(name)
        captions = [f"{det.labels[int(c)]}: {s:.2f}" for c, s in zip(det.class_id, det.confidence, strict=True)]
        save_image(self.out_dir / f"{name}.png",
                   draw_boxes(load_image(det.path), det.xyxy, captions, det.class_id.tolist()))

    def _collect(self, det: Any) -> None:
        key = Path(det.path).name
        if key not in self.image_ids:
            if self._fixed_images:
                from clipkit.errors import UsageError

                raise UsageError(f"{key} is not an image of the --coco-categories file")
            self.image_ids[key] = len(self.image_ids) + 1
        for (x0, y0, x1, y1), score, cls in zip(det.xyxy, det.confidence, det.class_id, strict=True):
            self.records.append({"image_id": self.image_ids[key],
                                 "category_id": self.label_ids[det.labels[int(cls)]],
                                 "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                                 "score": round(float(score), 5)})

    def close(self) -> None:
        if self.coco is not None:
            from clipkit.writers import atomic_write_text

            atomic_write_text(self.coco, json.dumps(self.records))
