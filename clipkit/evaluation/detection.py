"""COCO box AP of ``detect`` on a shapes-world export (``clipkit eval detect DATA/``).

Every image of the export is searched for *all* of its categories (48 "<colour> <shape>" names), the
detections are written as COCO results (``category_id`` from the export's categories) and scored with
pycocotools' ``COCOeval`` (``iouType="bbox"``, standard 100 detections per image). The evaluation keeps every
(box, label) pair down to ``score_threshold`` (default 0.01, the usual COCO practice) instead of the
user-facing 0.3 of ``detect``, because AP integrates over the whole precision-recall curve.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EVAL_SCORE_THRESHOLD", "coco_ap", "coco_results", "evaluate_detection"]

EVAL_SCORE_THRESHOLD = 0.01


def coco_results(detections: Iterable[Any], image_ids: dict[str, int], label_to_id: dict[str, int]
                 ) -> list[dict]:
    """COCO results list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` from
    ``Detections``; ``image_ids`` maps a detection's ``path`` (or its file name) to the COCO image id."""
    out = []
    for det in detections:
        key = det.path if det.path in image_ids else Path(det.path).name
        if key not in image_ids:
            raise KeyError(f"{det.path} is not an image of the ground truth")
        img_id = image_ids[key]
        for (x0, y0, x1, y1), score, cls in zip(det.xyxy, det.confidence, det.class_id, strict=True):
            label = det.labels[int(cls)]
            if label not in label_to_id:
                raise KeyError(f"label {label!r} has no COCO category id")
            out.append({"image_id": img_id, "category_id": label_to_id[label],
                        "bbox": [round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                                 round(float(y1 - y0), 2)], "score": round(float(score), 5)})
    return out


def coco_ap(instances: dict, results: Sequence[dict],
            image_ids: Sequence[int] | None = None) -> dict[str, float]:
    """pycocotools bbox AP: ``{"ap", "ap50", "ap75"}`` (fractions in [0, 1]; 0.0 when there are no results).

    ``instances``: a COCO instances dict (ground truth); ``image_ids``: evaluate on these images only.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on stdout
        gt = COCO()
        gt.dataset = instances
        gt.createIndex()
        dt = gt.loadRes(list(results))
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(s)) for s in ev.stats[:3]]  # -1 means "no ground truth": report 0
    return {"ap": stats[0], "ap50": stats[1], "ap75": stats[2]}


def evaluate_detection(data: str | Path, model: Any, config: Any = None, *, limit: int | None = None,
                       quiet: bool = True, **options: Any) -> dict[str, Any]:
    """Run ``detect`` over the export ``data`` and score it.

    ``config`` (:class:`clipkit.configs.DetectConfig`) and ``options`` (its fields) configure the predictor;
    unless the threshold was set explicitly it is :data:`EVAL_SCORE_THRESHOLD` (AP needs the low-score tail).
    ``limit``: evaluate the first N images only. Returns ``{"ap", "ap50", "ap75", "images", "ms_per_image",
    "ms_proposals_per_image", "ms_regions_per_image", "path", "detections_per_image"}``; the times cover
    proposals + region embeddings + scoring per image (decoding and the one-off label text embeddings
    excluded), and those two stages apart.
    """
    from clipkit.configs import DetectConfig
    from clipkit.methods.detect import DetectPredictor
    from clipkit.runner import Input, run
    from clipkit.world.dataset import ExportError, read_export

    export = read_export(data)
    paths = [str(p) for p in export.images[: limit or None]]
    if not paths:
        raise ValueError(f"{data} has no images")
    labels = [export.categories[k] for k in sorted(export.categories)]
    label_to_id = {name: k for k, name in export.categories.items()}
    cfg = DetectConfig.of(config, **options)
    if "threshold" not in cfg.model_fields_set and "threshold" not in options:
        cfg = cfg.replace(threshold=EVAL_SCORE_THRESHOLD)
    timings: dict[str, float] = {}
    predictor = DetectPredictor(model, labels, cfg, timings=timings)
    dets = []
    for det in run(predictor, [Input(p, p) for p in paths], workers=0, quiet=quiet, description="eval detect"):
        if not hasattr(det, "xyxy"):
            raise ExportError(f"{det.path}: {det.error}")
        dets.append(det)
    seconds = timings.get("proposals", 0.0) + timings.get("regions", 0.0)
    image_ids = {Path(p).name: export.image_info(p)["id"] for p in paths}
    scores = coco_ap(export.instances, coco_results(dets, image_ids, label_to_id), list(image_ids.values()))
    n_dets = np.mean([len(d) for d in dets]) if dets else 0.0
    return {**scores, "images": len(paths), "ms_per_image": round(1000 * seconds / len(paths), 1),
            "ms_proposals_per_image": round(1000 * timings.get("proposals", 0.0) / len(paths), 1),
            "ms_regions_per_image": round(1000 * timings.get("regions", 0.0) / len(paths), 2),
            "path": cfg.path, "detections_per_image": round(float(n_dets), 2)}
