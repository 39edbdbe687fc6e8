"""clipkit results in the formats the rest of the field reads: supervision detections and COCO datasets.

* :func:`to_supervision` / :func:`from_supervision`: :class:`clipkit.results.Detections` ⇄
  ``supervision.Detections`` (same parallel-array convention: ``xyxy`` float32 absolute XYXY pixels,
  ``confidence``, ``class_id``; the label names travel in ``data["class_name"]``, as supervision's own
  connectors put them). supervision is an optional extra (``pip install clipkit[supervision]``).
* :class:`CocoDataset`: the predictions of a run as a COCO *dataset* (``images``, ``categories``,
  ``annotations`` with ``bbox`` XYWH, ``area``, ``score`` and, for segmentations, an RLE ``segmentation``), the
  file ``--coco-dataset FILE`` writes: ``pycocotools.coco.COCO(FILE)`` loads it, and FiftyOne imports it with
  ``fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset, data_path=IMAGES_ROOT,
  labels_path=FILE)`` (``file_name`` is each input's path as given to clipkit).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.results import Detections


def to_supervision(det: Detections) -> Any:
    """A ``supervision.Detections`` with the same boxes, scores and class ids; ``data["class_name"]`` holds the
    label of each box and every other ``det.data`` array is carried over."""
    try:
        import supervision as sv
    except ImportError as exc:
        raise ImportError("to_supervision needs the supervision package: pip install 'clipkit[supervision]'") \
            from exc
    names = np.asarray([det.labels[int(c)] for c in det.class_id], dtype=object)
    return sv.Detections(xyxy=det.xyxy.copy(), confidence=det.confidence.copy(), class_id=det.class_id.copy(),
                         data={**{k: np.asarray(v) for k, v in det.data.items()}, "class_name": names})


def from_supervision(detections: Any, labels: Sequence[str] | None = None, *, path: str = "",
                     image_size: tuple[int, int] = (0, 0)) -> Detections:
    """clipkit :class:`Detections` from a ``supervision.Detections``. ``labels``: the class names in class-id
    order (default: from ``data["class_name"]``, else ``"class <id>"``); a missing confidence is 1."""
    n = len(detections.xyxy)
    class_id = np.zeros(n, np.int64) if detections.class_id is None else np.asarray(detections.class_id, np.int64)
    confidence = np.ones(n, np.float32) if detections.confidence is None else detections.confidence
    data = dict(detections.data or {})
    names = data.pop("class_name", None)
    if labels is None:
        top = int(class_id.max()) + 1 if n else 0
        found = {int(c): str(nm) for c, nm in zip(class_id, names, strict=True)} if names is not None else {}
        labels = [found.get(i, f"class {i}") for i in range(top)]
    return Detections(np.asarray(detections.xyxy, np.float32), confidence, class_id, list(labels),
                      {k: np.asarray(v) for k, v in data.items()}, path=path, image_size=image_size)


class CocoDataset:
    """Collects a run's results and writes them as one COCO dataset JSON at :meth:`close` (nothing without a
    path). Detections and groundings give one box annotation each; a segmentation gives one annotation per label
    present, with its RLE mask, the mask's bounding box and its mean score. Categories are numbered from 1 in the
    order the labels first appear; images from 1 in input order."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.images: list[dict[str, Any]] = []
        self.categories: dict[str, int] = {}
        self.annotations: list[dict[str, Any]] = []

    def _category(self, name: str) -> int:
        return self.categories.setdefault(name, len(self.categories) + 1)

    def _image(self, path: str, width: int, height: int) -> int:
        self.images.append({"id": len(self.images) + 1, "file_name": path, "width": int(width),
                            "height": int(height)})
        return len(self.images)

    def _annotation(self, image_id: int, label: str, bbox: Sequence[float], score: float, **extra: Any) -> None:
        x, y, w, h = (float(v) for v in bbox)
        self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id,
                                 "category_id": self._category(label), "bbox": [x, y, w, h],
                                 "area": float(extra.pop("area", w * h)), "iscrowd": 0,
                                 "score": float(np.float32(score)), **extra})

    def add(self, result: Any) -> None:
        """Add one result (Detections, Grounding or Segmentation; anything else is ignored)."""
        if self.path is None:
            return
        kind = type(result).__name__
        if kind == "Segmentation":
            self._segmentation(result)
        elif kind in ("Detections", "Grounding"):
            det = getattr(result, "detections", result)
            image_id = self._image(det.path, *det.image_size)
            for (x0, y0, x1, y1), score, cls in zip(det.xyxy, det.confidence, det.class_id, strict=True):
                self._annotation(image_id, det.labels[int(cls)], (x0, y0, x1 - x0, y1 - y0), score)

    def _segmentation(self, seg: Any) -> None:
        from pycocotools import mask as mask_utils

        height, width = seg.label_map.shape
        image_id = self._image(seg.path, width, height)
        scores = {c["label"]: c["score"] for c in seg.classes()}
        for k, label in enumerate(seg.labels, start=1):
            if label not in scores:
                continue
            rle = mask_utils.encode(np.asfortranarray((seg.label_map == k).astype(np.uint8)))
            self._annotation(image_id, label, mask_utils.toBbox(rle).tolist(), scores[label],
                             area=float(mask_utils.area(rle)),
                             segmentation={"size": [int(s) for s in rle["size"]],
                                           "counts": rle["counts"].decode("ascii")})

    def close(self) -> None:
        if self.path is None:
            return
        from clipkit.writers import atomic_write_text

        categories = [{"id": i, "name": name} for name, i in self.categories.items()]
        atomic_write_text(self.path, json.dumps({"images": self.images, "categories": categories,
                                                 "annotations": self.annotations}))
