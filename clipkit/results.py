"""Result types: one per kind, shared across methods.

Every result has ``path`` and ``to_dict()`` (its JSON line) and ``table_row()`` (its cells in a terminal table).
Arrays are numpy, so results are cheap to keep, index and serialise. Coordinates are XYXY in absolute pixels of
the original image; label maps are ``[H, W]`` integers where 0 is background and k is ``labels[k - 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


@dataclass
class ErrorRecord:
    """An input that failed: ``{"path", "error"}``; the run goes on without it."""

    path: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}

    def table_row(self) -> list[str]:
        return [self.path, f"[red]error: {self.error}[/red]"]


@dataclass
class Classification:
    """Zero-shot scores of one image: ``labels[i]`` has ``scores[i]`` (float32 ``[N]``), sorted by score."""

    path: str
    labels: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.labels) != len(self.scores):
            raise ValueError(f"{len(self.labels)} labels but {len(self.scores)} scores")
        order = np.argsort(-self.scores, kind="stable")
        self.labels = [self.labels[i] for i in order]
        self.scores = self.scores[order]

    @property
    def top(self) -> str | None:
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "labels": [{"label": lb, "score": _r(s)} for lb, s in zip(self.labels, self.scores,
                                                                                      strict=True)]}

    def table_row(self) -> list[str]:
        return [self.path, ", ".join(f"{lb} {s:.3f}" for lb, s in zip(self.labels[:5], self.scores[:5], strict=True))]


@dataclass
class Segmentation:
    """A label map for one image.

    ``label_map``: ``[H, W]`` uint8/uint16 at the original size, 0 = background, k = ``labels[k - 1]``.
    ``scores``: optional ``[N, H, W]`` float per-label probabilities (same order as ``labels``).
    ``extras``: method-specific arrays (e.g. GroupViT's per-stage group maps ``stage1``/``stage2``).
    """

    path: str
    labels: list[str]
    label_map: np.ndarray
    scores: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label_map.ndim != 2:
            raise ValueError(f"label_map must be [H, W], got shape {self.label_map.shape}")
        if self.scores is not None and self.scores.shape[0] != len(self.labels):
            raise ValueError(f"scores has {self.scores.shape[0]} channels for {len(self.labels)} labels")

    def classes(self) -> list[dict[str, Any]]:
        """Labels present in the map: pixel fraction and mean score over their pixels, largest first."""
        total = self.label_map.size
        out = []
        for k, label in enumerate(self.labels, start=1):
            mask = self.label_map == k
            count = int(mask.sum())
            if count == 0:
                continue
            score = float(self.scores[k - 1][mask].mean()) if self.scores is not None else 1.0
            out.append({"label": label, "fraction": _r(count / total), "score": _r(score)})
        return sorted(out, key=lambda c: -c["fraction"])

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "classes": self.classes()}
        data.update({k: v for k, v in self.extras.items() if not isinstance(v, np.ndarray)})
        return data

    def table_row(self) -> list[str]:
        return [self.path, ", ".join(f"{c['label']} {c['fraction']:.1%}" for c in self.classes()[:5]) or "(none)"]


@dataclass
class Detections:
    """Boxes found in one image, as parallel arrays (the `supervision` convention).

    ``xyxy``: ``[N, 4]`` float32, XYXY absolute pixels of the original image; ``confidence``: ``[N]`` float32;
    ``class_id``: ``[N]`` int64 indexing ``labels``; ``data``: extra per-box arrays of length N (e.g.
    ``data["phrase"]`` for grounding); ``image_size``: (W, H) of the original image.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    labels: list[str]
    data: dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""
    image_size: tuple[int, int] = (0, 0)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        n = len(self.xyxy)
        if len(self.confidence) != n or len(self.class_id) != n:
            raise ValueError("xyxy, confidence and class_id must have the same length")
        for key, value in self.data.items():
            if len(value) != n:
                raise ValueError(f"data[{key!r}] has {len(value)} entries for {n} boxes")

    @classmethod
    def empty(cls, labels: Sequence[str] = (), path: str = "", image_size: tuple[int, int] = (0, 0)) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), list(labels), path=path, image_size=image_size)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Boolean mask, integer array or slice -> the selected boxes (labels and metadata kept)."""
        if isinstance(index, int):
            index = [index]
        return Detections(
            self.xyxy[index], self.confidence[index], self.class_id[index], self.labels,
            {k: np.asarray(v)[index] for k, v in self.data.items()}, self.path, self.image_size, self.meta,
        )

    def box_dicts(self) -> list[dict[str, Any]]:
        """One dict per box: ``{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}`` plus its data."""
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (_r(v, 1) for v in self.xyxy[i])
            item: dict[str, Any] = {"label": self.labels[self.class_id[i]], "score": _r(self.confidence[i]),
                                    "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}}
            for key, value in self.data.items():
                v = value[i]
                item[key] = v.item() if isinstance(v, np.generic) else v
            out.append(item)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "detections": self.box_dicts(), **self.meta}

    def table_row(self) -> list[str]:
        return [self.path, ", ".join(f"{d['label']} {d['score']:.2f}" for d in self.box_dicts()[:6]) or "(none)"]


@dataclass
class Grounding:
    """One image's phrase grounding: the caption, its phrases and a :class:`Detections` whose ``class_id``
    indexes ``phrases`` (``labels`` = the phrase texts, ``data["phrase"]`` the phrase of each box).

    ``phrases``: objects with ``text`` (str) and ``span`` (``[start, end)`` character offsets in ``caption``),
    e.g. :class:`clipkit.phrases.Phrase`.
    """

    path: str
    caption: str
    phrases: list[Any]
    detections: Detections
    # per phrase: the relation/superlative that decided it (None: the phrase alone) and the calibrated
    # probability that it is in the image; notes on words not understood; the noun-phrase parser that ran
    decided_by: list[dict[str, Any] | None] = field(default_factory=list)
    present: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parser: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"path", "caption", "phrases": [{"phrase", "span", "boxes": [{"score", "box"}], "present",
        "decided_by"}], "parser", "notes"}`` — the referent first; an absent phrase has ``boxes: []``."""
        det = self.detections
        per_phrase: list[list[dict[str, Any]]] = [[] for _ in self.phrases]
        for d, c in zip(det.box_dicts(), det.class_id, strict=True):
            per_phrase[int(c)].append({"score": d["score"], "box": d["box"]})
        out = [{"phrase": ph.text, "span": list(ph.span), "boxes": boxes}
               for ph, boxes in zip(self.phrases, per_phrase, strict=True)]
        for k, item in enumerate(out):
            if k < len(self.present):
                item["present"] = _r(self.present[k])
            if k < len(self.decided_by):
                item["decided_by"] = self.decided_by[k]
        extra = {"parser": self.parser} if self.parser else {}
        if self.notes:
            extra["notes"] = list(self.notes)
        return {"path": self.path, "caption": self.caption, "phrases": out, **extra}

    def table_row(self) -> list[str]:
        det = self.detections
        cells = [f"{det.labels[int(c)]} {s:.2f}" for c, s in zip(det.class_id, det.confidence, strict=True)]
        return [self.path, ", ".join(cells[:6]) or "(none)"]


@dataclass
class Sketch:
    """A finished sketch: the SVG and PNG written, the final loss, iterations run and wall time."""

    path: str
    svg: str
    png: str
    loss: float
    iterations: int
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "svg": self.svg, "png": self.png, "loss": _r(self.loss, 6),
                "iterations": self.iterations, "seconds": _r(self.seconds, 2), **self.extras}

    def table_row(self) -> list[str]:
        return [self.path, f"{self.svg} (loss {self.loss:.4f}, {self.iterations} it, {self.seconds:.1f} s)"]


Result = ErrorRecord | Classification | Segmentation | Detections | Sketch
