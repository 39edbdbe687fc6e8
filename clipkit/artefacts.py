"""The one artefact writer: the pictures and side files of every method, under one naming rule.

For an input whose stem is ``x`` (``photo.jpg`` → ``photo``; an in-memory item ``<image 3>`` → ``image-3``), every
file is ``DIR/x.<kind>.<ext>``:

=================  ============================================================================
kind               written for
=================  ============================================================================
``mask.png``       Segmentation: palette PNG of the label map (0 = background, k = k-th label);
                   16-bit greyscale PNG when there are more than 255 labels
``overlay.png``    Segmentation: the image tinted by label, with a legend (``overlay``)
``scores.npz``     Segmentation: per-label probabilities ``[N, H, W]`` float16 (``scores``)
``stage1.png`` …   Segmentation with group maps (GroupViT): the image tinted by group
``boxes.png``      Detections / Grounding: boxes with ``label: score`` tags
``sketch.svg``     Sketch: the strokes (also ``sketch.png``, and ``sketch.gif`` with ``frames``)
=================  ============================================================================

Since every name carries a kind after the stem, two inputs can only collide through equal stems; stems shared
by several inputs of a run get ``-`` and 8 hex digits of the input's resolved path, so names are the same
whichever subset of the inputs a (resumed) run processes. One palette colours a label the same in masks,
overlays and boxes. All files are written atomically (:mod:`clipkit.writers`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipkit.errors import UsageError
from clipkit.interop import CocoDataset
from clipkit.results import resize_map
from clipkit.writers import atomic_write_text, label_png, overlay, palette, save_image, save_scores_npz

FRAME_MS = 100  # GIF frame duration of sketch animations


def _base_stem(key: str) -> str:
    match = re.fullmatch(r"<image (\d+)>", key)
    if match:
        return f"image-{match.group(1)}"
    return re.sub(r"[^\w.\-+=,@ ]", "_", Path(key).stem) or "image"


def stems(keys: Sequence[str]) -> dict[str, str]:
    """Input key → file stem, unique within ``keys`` (see the module docstring)."""
    counts = Counter(_base_stem(k) for k in keys)
    out = {}
    for key in keys:
        stem = _base_stem(key)
        if counts[stem] > 1:
            resolved = str(Path(key).resolve()) if not key.startswith("<image ") else key
            stem = f"{stem}-{hashlib.sha1(resolved.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        out[key] = stem
    return out


def group_overlay(image: Image.Image, group_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image blended with one palette colour per group (the official ``all_groups`` visualisation)."""
    colours = palette(int(group_map.max()) + 1)[1:]
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = base * (1 - alpha) + colours[group_map].astype(np.float32) * alpha
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def coco_rle(label_map: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """One COCO RLE (``{"size": [H, W], "counts": str}``) per label present in ``label_map``."""
    from pycocotools import mask as mask_utils

    out = []
    for k, label in enumerate(labels, start=1):
        mask = label_map == k
        if mask.any():
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            out.append({"label": label, "category_id": k,
                        "rle": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}})
    return out


class ArtefactWriter:
    """Writes each result's files into ``out_dir`` (and, for detect, a COCO results JSON at ``close()``).

    ``config``: the method's config; its ``overlay``, ``scores``, ``rle``, ``frames``, ``coco``,
    ``coco_categories`` and ``coco_dataset`` (:class:`clipkit.interop.CocoDataset`) fields (where it has them)
    choose what is written. ``keys``: every input of the run, for the stem rule.
    """

    def __init__(self, out_dir: str | Path | None, config: Any, keys: Sequence[str], labels: Sequence[str] = ()):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.config = config
        self.stems = stems(keys)
        self.coco = _CocoResults(labels, getattr(config, "coco", None), getattr(config, "coco_categories", None))
        self.coco_dataset = CocoDataset(getattr(config, "coco_dataset", None))
        if self.out_dir is not None:
            if self.out_dir.exists() and not self.out_dir.is_dir():
                raise UsageError(f"--out-dir {self.out_dir} exists and is not a folder")
            self.out_dir.mkdir(parents=True, exist_ok=True)

    @property
    def needs_image(self) -> bool:
        """Whether writing needs the decoded input image (pictures are drawn on it)."""
        return self.out_dir is not None

    def _path(self, key: str, kind: str) -> Path:
        assert self.out_dir is not None
        return self.out_dir / f"{self.stems.get(key) or _base_stem(key)}.{kind}"

    def write(self, result: Any, image: Image.Image | None) -> None:
        """Write ``result``'s files (recording them in ``result.files``); JSON-only additions (RLE) too."""
        kind = type(result).__name__
        if kind == "Segmentation" and getattr(self.config, "rle", False):
            result.extras["segmentation"] = coco_rle(result.label_map, result.labels)
        if kind in ("Detections", "Grounding"):
            self.coco.add(getattr(result, "detections", result))
        self.coco_dataset.add(result)
        if self.out_dir is None:
            return
        if kind == "Segmentation":
            self._segmentation(result, image)
        elif kind in ("Detections", "Grounding"):
            self._boxes(result, image)
        elif kind == "Sketch":
            self._sketch(result)

    def _save(self, result: Any, kind: str, write: Any, *args: Any, **kwargs: Any) -> None:
        """Write ``DIR/<stem>.<kind>`` and record it in ``result.files`` under the kind's name (``mask``,
        ``overlay``, …; a sketch's files under their format: ``svg``, ``png``, ``gif``)."""
        path = self._path(result.path, kind)
        write(path, *args, **kwargs)
        name, _, ext = kind.partition(".")
        result.files[ext if name == "sketch" else name] = str(path)

    def _segmentation(self, result: Any, image: Image.Image | None) -> None:
        self._save(result, "mask.png", save_image, label_png(result.label_map, len(result.labels)))
        if image is not None and getattr(self.config, "overlay", True):
            # pictures are drawn on the working image (smaller than the original after --max-side)
            fit = (lambda m: m) if result.label_map.shape == image.size[::-1] else (lambda m: resize_map(m, image.size))
            self._save(result, "overlay.png", save_image, overlay(image, fit(result.label_map), result.labels))
            for key in ("stage1", "stage2"):
                if key in result.extras:
                    self._save(result, f"{key}.png", save_image, group_overlay(image, fit(result.extras[key])))
        if getattr(self.config, "scores", False) and result.scores is not None:
            self._save(result, "scores.npz", save_scores_npz, result.scores, result.labels)

    def _boxes(self, result: Any, image: Image.Image | None) -> None:
        from clipkit.draw import draw_boxes

        if image is None:
            return
        det = getattr(result, "detections", result)
        if det.image_size != image.size:  # drawn on the working image of a downscaled input
            det = det.rescaled(image.size)
        captions = [f"{det.labels[int(c)]}: {s:.2f}" for c, s in zip(det.class_id, det.confidence, strict=True)]
        self._save(result, "boxes.png", save_image, draw_boxes(image, det.xyxy, captions, det.class_id.tolist()))

    def _sketch(self, result: Any) -> None:
        out = result.output
        png = Image.fromarray(((1.0 - np.clip(out.alpha, 0, 1)) * 255.0 + 0.5).astype(np.uint8), "L")
        self._save(result, "sketch.svg", atomic_write_text, result.svg)
        self._save(result, "sketch.png", save_image, png)
        if out.frames:
            frames = [Image.fromarray(f, "L") for f in [*out.frames, np.asarray(png)]]
            self._save(result, "sketch.gif", save_image, frames[0], save_all=True, append_images=frames[1:],
                       duration=FRAME_MS, loop=0)

    def close(self) -> None:
        """Finish run-level files (COCO results, COCO dataset)."""
        self.coco.close()
        self.coco_dataset.close()


class _CocoResults:
    """COCO results JSON of detect (``--coco``): ids from ``categories_file`` (an instances.json: category name →
    id, image file name → id), else labels numbered from 1 and images numbered in input order."""

    def __init__(self, labels: Sequence[str], path: str | None, categories_file: str | None):
        self.path = Path(path) if path is not None else None
        self.label_ids = {name: i + 1 for i, name in enumerate(labels)}
        self.image_ids: dict[str, int] = {}
        self.fixed_images = False
        self.records: list[dict] = []
        if categories_file is not None:
            try:
                inst = json.loads(Path(categories_file).read_text())
                self.label_ids = {c["name"]: int(c["id"]) for c in inst["categories"]}
                self.image_ids = {Path(im["file_name"]).name: int(im["id"]) for im in inst.get("images", [])}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UsageError(f"cannot read COCO categories from {categories_file}: {e}") from None
            self.fixed_images = bool(self.image_ids)
            missing = [name for name in labels if name not in self.label_ids]
            if missing:
                raise UsageError(f"label(s) {missing} are not categories of {categories_file}")

    def add(self, det: Any) -> None:
        if self.path is None:
            return
        key = Path(det.path).name
        if key not in self.image_ids:
            if self.fixed_images:
                raise OSError(f"{key} is not an image of the --coco-categories file")
            self.image_ids[key] = len(self.image_ids) + 1
        for (x0, y0, x1, y1), score, cls in zip(det.xyxy, det.confidence, det.class_id, strict=True):
            self.records.append({"image_id": self.image_ids[key],
                                 "category_id": self.label_ids[det.labels[int(cls)]],
                                 "bbox": [float(v) for v in (x0, y0, x1 - x0, y1 - y0)],
                                 "score": float(np.float32(score))})

    def close(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(self.records))
