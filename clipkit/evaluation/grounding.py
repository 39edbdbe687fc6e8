"""Grounding accuracy on a shapes-world export (``clipkit eval ground DATA/``).

``referring.json`` holds one expression per object ("the red circle", box XYXY px, ``distractor`` when another
object of the scene shares its colour or shape). The expressions of one image are grounded together (one set
of proposals and box embeddings per image, best box per expression); a prediction is correct when its IoU with
the target box is ≥ 0.5 (the RefCOCO / ReCLIP criterion).
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["box_iou", "evaluate_grounding"]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two XYXY boxes (pixels, exclusive max edges)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def evaluate_grounding(data: str | Path, model: Any, config: Any = None, *, limit: int | None = None,
                       iou: float = 0.5, quiet: bool = True, **options: Any) -> dict[str, Any]:
    """Accuracy at IoU ≥ ``iou`` over ``referring.json`` of the export ``data``.

    ``config`` (:class:`clipkit.configs.GroundConfig`) and ``options`` (its fields) configure the grounding.
    ``limit``: the first N images only.
    Returns ``{"accuracy", "accuracy_distractor", "accuracy_no_distractor", "expressions", "distractor_cases",
    "images", "ms_per_phrase"}``; ``accuracy_distractor`` is ``None`` when there are no distractor cases.
    """
    from clipkit.configs import GroundConfig
    from clipkit.methods.ground import ground_image, phrase_embeddings
    from clipkit.phrases import Phrase
    from clipkit.runner import progress
    from clipkit.world.dataset import ExportError, load_dataset_image, read_export

    export = read_export(data)
    if export.referring_error:
        raise ExportError(export.referring_error)
    if not export.referring:
        raise ValueError(f"{data} has no referring.json entries")
    by_image: dict[str, list[dict]] = defaultdict(list)
    for ref in export.referring:
        by_image[ref["path"]].append(ref)
    paths = list(by_image)[: limit or None]
    cfg = (config or GroundConfig()).replace(**options) if options else (config or GroundConfig())
    correct, distractor = [], []
    seconds = 0.0
    with progress(len(paths), "eval ground", quiet) as bar:
        for p in paths:
            refs = by_image[p]
            image = load_dataset_image(p)
            t0 = time.perf_counter()
            phrases = [Phrase(r["expression"], 0, len(r["expression"])) for r in refs]
            text = phrase_embeddings(model, phrases, cfg)
            res = ground_image(model, image, "", phrases, text, cfg, path=p)
            seconds += time.perf_counter() - t0
            det = res.detections
            for k, r in enumerate(refs):
                sel = np.nonzero(det.class_id == k)[0]
                ok = bool(len(sel)) and box_iou(det.xyxy[sel[0]], np.asarray(r["box"], np.float32)) >= iou
                correct.append(ok)
                distractor.append(bool(r.get("distractor", False)))
            bar.advance()
    c, d = np.asarray(correct), np.asarray(distractor)
    return {
        "accuracy": float(c.mean()),
        "accuracy_distractor": float(c[d].mean()) if d.any() else None,
        "accuracy_no_distractor": float(c[~d].mean()) if (~d).any() else None,
        "expressions": len(c), "distractor_cases": int(d.sum()), "images": len(paths),
        "ms_per_phrase": round(1000 * seconds / max(1, len(c)), 1),
    }
