"""Grounding accuracy on a shapes-world export (``clipkit eval ground DATA/``).

``referring.json`` holds typed expressions (:func:`clipkit.world.export.referring_entries`): ``plain`` ("the red
circle"), ``attribute`` ("the star"), ``relation`` ("the circle left of the blue square"), ``superlative`` ("the
leftmost circle") and ``absent`` (names nothing in the scene, ``box`` null). Each expression is grounded on its
own, as a user would call ``clipkit ground IMAGE --caption EXPRESSION``: its phrases are parsed, grounded with
the relations and superlatives applied, and the referent (the first phrase) is the answer. A box answer is
correct when its IoU with the target box is ≥ 0.5 (the RefCOCO / ReCLIP criterion); an ``absent`` expression is
correct when the referent gets no box.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.configs import GroundConfig

__all__ = ["TYPES", "box_iou", "calibration_samples", "evaluate_grounding"]

TYPES = ("plain", "attribute", "relation", "superlative", "absent")


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two XYXY boxes (pixels, exclusive max edges)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _by_image(data: str | Path, limit: int | None) -> tuple[list[str], dict[str, list[dict]]]:
    from clipkit.world.dataset import ExportError, read_export

    export = read_export(data)
    if export.referring_error:
        raise ExportError(export.referring_error)
    if not export.referring:
        raise ValueError(f"{data} has no referring.json entries")
    by_image: dict[str, list[dict]] = defaultdict(list)
    for ref in export.referring:
        by_image[ref["path"]].append(ref)
    return list(by_image)[: limit or None], by_image


def evaluate_grounding(data: str | Path, model: Any, config: Any = None, *, limit: int | None = None,
                       iou: float = 0.5, types: tuple[str, ...] | None = None, quiet: bool = True,
                       **options: Any) -> dict[str, Any]:
    """Accuracy at IoU ≥ ``iou`` over ``referring.json`` of the export ``data``, one ground call per expression.

    ``config`` (:class:`clipkit.configs.GroundConfig`) and ``options`` (its fields) configure the grounding.
    ``limit``: the first N images only; ``types``:
    only these expression types. Returns ``{"accuracy", "per_type": {type: {"accuracy", "expressions"}},
    "absent_empty_rate", "accuracy_distractor", "accuracy_no_distractor" (plain expressions), "expressions",
    "distractor_cases", "images", "ms_per_phrase" (per expression), "parser", "not_understood"}``; a rate is
    ``None`` when it has no cases.
    """
    from clipkit.methods.ground import ground_image, phrase_embeddings
    from clipkit.phrases import parse_phrases
    from clipkit.runner import progress
    from clipkit.world.dataset import load_dataset_image

    paths, by_image = _by_image(data, limit)
    cfg = GroundConfig.of(config, **options)
    rows: list[tuple[str, bool, bool]] = []  # (type, correct, distractor)
    seconds, parser, not_understood = 0.0, None, 0
    with progress(len(paths), "eval ground", quiet) as bar:
        for p in paths:
            image = load_dataset_image(p)
            for r in by_image[p]:
                kind = r.get("type", "plain")
                if types and kind not in types:
                    continue
                t0 = time.perf_counter()
                caption, phrases = parse_phrases(r["expression"])
                text = phrase_embeddings(model, phrases, cfg)
                res = ground_image(model, image, caption, phrases, text, cfg, path=p)
                seconds += time.perf_counter() - t0
                parser, not_understood = res.parser, not_understood + bool(res.notes)
                det = res.detections
                sel = np.nonzero(det.class_id == 0)[0]  # the referent is the first phrase
                if r.get("box") is None:
                    ok = len(sel) == 0
                else:
                    ok = bool(len(sel)) and box_iou(det.xyxy[sel[0]], np.asarray(r["box"], np.float32)) >= iou
                rows.append((kind, ok, bool(r.get("distractor", False))))
            bar.advance()
    if not rows:
        raise ValueError(f"{data} has no expressions of the types {', '.join(types or TYPES)}")

    def rate(sel: list[bool]) -> float | None:
        return float(np.mean(sel)) if sel else None

    per_type = {k: {"accuracy": rate([ok for t, ok, _ in rows if t == k]),
                    "expressions": sum(t == k for t, *_ in rows)} for k in TYPES if any(t == k for t, *_ in rows)}
    plain = [(ok, d) for t, ok, d in rows if t == "plain"]
    return {
        "accuracy": rate([ok for _, ok, _ in rows]),
        "per_type": per_type,
        "absent_empty_rate": per_type.get("absent", {}).get("accuracy"),
        "accuracy_distractor": rate([ok for ok, d in plain if d]),
        "accuracy_no_distractor": rate([ok for ok, d in plain if not d]),
        "expressions": len(rows), "distractor_cases": sum(d for _, d in plain), "images": len(paths),
        "ms_per_phrase": round(1000 * seconds / len(rows), 1), "parser": parser,
        "not_understood": not_understood,
    }


def calibration_samples(data: str | Path, model: Any, *, limit: int | None = None, iou: float = 0.5,
                        progress: Callable[[int], None] | None = None, **options: Any
                        ) -> list[tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, bool]]:
    """``(logits [K], background [K], target, ious [K], competitors [K], expanded)`` of the referent of every ``plain``,
    ``attribute`` and ``absent`` expression (those the phrase alone decides): target = the candidate with the
    highest IoU ≥ ``iou`` with the target box, ``-1`` for ``absent``; ``ious``: each candidate's IoU with the
    target box; ``competitors``: see :class:`clipkit.methods.ground.PhraseScores`; ``expanded``: the phrase is
    scored over several vocabulary names. Expressions whose target no
    candidate covers are skipped (a proposal miss, not a scoring question). Input of
    :func:`clipkit.reclip.fit_calibration` and :func:`clipkit.reclip.fit_box_calibration`."""
    from clipkit.methods.ground import phrase_embeddings, score_phrases
    from clipkit.phrases import parse_phrases
    from clipkit.world.dataset import load_dataset_image

    paths, by_image = _by_image(data, limit)
    cfg = GroundConfig.of(None, **options)
    out = []
    for p in paths:
        image = load_dataset_image(p)
        for r in by_image[p]:
            if r.get("type", "plain") not in ("plain", "attribute", "absent"):
                continue
            caption, phrases = parse_phrases(r["expression"])
            sc = score_phrases(model, image, caption, phrases, phrase_embeddings(model, phrases, cfg), cfg)
            own = slice(None) if sc.own is None else sc.own  # presence is calibrated on the phrases' own boxes
            boxes = sc.boxes[own]
            target, ious = -1, np.zeros(len(boxes))
            if r.get("box") is not None:
                ious = np.array([box_iou(b, np.asarray(r["box"], np.float32)) for b in boxes])
                if not len(ious) or ious.max() < iou:
                    continue
                target = int(np.argmax(ious))
            out.append((sc.logits[own, 0].astype(np.float64), sc.background[own].astype(np.float64), target, ious,
                        sc.competitors[own, 0].astype(np.float64), sc.expression.phrases[0].expanded))
        if progress is not None:
            progress(1)
    return out
