"""Result types: one per kind, shared across methods.

Every result has ``path`` (the input's name), ``files`` (the artefacts written for it, kind → path) and
``to_dict()`` (its JSON line; the sink formats terminal tables from it). Arrays are numpy, so results
are cheap to keep, index and serialise. Coordinates are XYXY in absolute pixels of the original image; label
maps are ``[H, W]`` integers where 0 is background and k is ``labels[k - 1]``.

JSON carries scores and coordinates at full float32 precision (the shortest decimal that reads back as the same
float32); only the terminal table rounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _f32(value: float) -> float:
    """The float32 ``value`` as the shortest decimal that round-trips (``0.1f`` → 0.1, not 0.10000000149)."""
    return float(str(np.float32(value)))


def resize_map(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An integer map ``[H, W]`` resized to ``size`` = (W, H) by nearest neighbour (labels stay labels), in the
    smallest unsigned dtype that holds it (an 8000×8000 map is 64 MB as uint8, 512 MB as int64)."""
    if array.size and array.min() >= 0:
        array = array.astype(np.uint8 if array.max() < 256 else np.uint16 if array.max() < 65536 else np.uint32,
                             copy=False)
    h, w = array.shape
    rows = np.minimum((np.arange(size[1]) + 0.5) * h / size[1], h - 1).astype(np.intp)
    cols = np.minimum((np.arange(size[0]) + 0.5) * w / size[0], w - 1).astype(np.intp)
    return array[rows[:, None], cols[None, :]]


def _label_counts(label_map: np.ndarray, n: int, rows: int = 512) -> np.ndarray:
    """Pixels per label ``[n]`` int64, in blocks of rows: ``np.bincount`` casts its input to int64, which for an
    8000×8000 map would be a 512 MB copy."""
    counts = np.zeros(n, np.int64)
    for start in range(0, label_map.shape[0], rows):
        counts += np.bincount(label_map[start:start + rows].ravel(), minlength=n)[:n]
    return counts


def _with_files(data: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    if files:
        data["files"] = dict(files)
    return data


@dataclass
class ErrorRecord:
    """An input that failed: ``{"path", "error"}``; the run goes on without it."""

    path: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "error": self.error}



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
        return {"path": self.path, "labels": [{"label": lb, "score": _f32(s)}
                                              for lb, s in zip(self.labels, self.scores, strict=True)]}



@dataclass
class Segmentation:
    """A label map for one image.

    ``label_map``: ``[H, W]`` uint8/uint16 at the original size, 0 = background, k = ``labels[k - 1]``.
    ``scores``: optional ``[N, h, w]`` float per-label probabilities (same order as ``labels``), at the working
    resolution (smaller than the label map when the runner downscaled the input, ``--max-side``).
    ``extras``: method-specific arrays (e.g. GroupViT's per-stage group maps ``stage1``/``stage2``); arrays
    stay out of the JSON, other values go in it.
    ``mean_scores``: optional float ``[N]``, each label's mean winning probability over its pixels at full
    resolution (:mod:`clipkit.pixelwise`: blended from the working grid inside cells decided there)
    (what :meth:`classes` reports), for methods that decide pixels without keeping ``scores``.
    """

    path: str
    labels: list[str]
    label_map: np.ndarray
    scores: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    mean_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.label_map.ndim != 2:
            raise ValueError(f"label_map must be [H, W], got shape {self.label_map.shape}")
        if self.scores is not None and self.scores.shape[0] != len(self.labels):
            raise ValueError(f"scores has {self.scores.shape[0]} channels for {len(self.labels)} labels")

    def classes(self) -> list[dict[str, Any]]:
        """Labels present in the map: pixel fraction and mean score over their pixels, largest first."""
        total = self.label_map.size
        counts = _label_counts(self.label_map, len(self.labels) + 1)
        small = self.label_map
        if self.mean_scores is None and self.scores is not None and self.scores.shape[1:] != small.shape:
            small = resize_map(small, (self.scores.shape[2], self.scores.shape[1]))
        out = []
        for k in np.flatnonzero(counts[1:]) + 1:  # only the labels present
            if self.mean_scores is not None:
                score = float(self.mean_scores[k - 1])
            else:
                inside = small == k
                score = float(self.scores[k - 1][inside].mean()) if self.scores is not None and inside.any() \
                    else 1.0
            out.append({"label": self.labels[k - 1], "fraction": _f32(counts[k] / total), "score": _f32(score)})
        return sorted(out, key=lambda c: -c["fraction"])

    def rescaled(self, size: tuple[int, int]) -> Segmentation:
        """The label map and group maps resized to ``size`` = (W, H) (nearest); scores stay at working size."""
        extras = {k: resize_map(v, size) if isinstance(v, np.ndarray) and v.ndim == 2 else v
                  for k, v in self.extras.items()}
        return Segmentation(self.path, self.labels, resize_map(self.label_map, size), self.scores, extras, self.files,
                            self.mean_scores)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "classes": self.classes()}
        data.update({k: v for k, v in self.extras.items() if not isinstance(v, np.ndarray)})
        return _with_files(data, self.files)



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
    files: dict[str, str] = field(default_factory=dict)

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

    def to_supervision(self) -> Any:
        """These boxes as ``supervision.Detections`` (:func:`clipkit.interop.to_supervision`)."""
        from clipkit.interop import to_supervision

        return to_supervision(self)

    @classmethod
    def from_supervision(cls, detections: Any, labels: Sequence[str] | None = None, **kw: Any) -> Detections:
        """Boxes from ``supervision.Detections`` (:func:`clipkit.interop.from_supervision`)."""
        from clipkit.interop import from_supervision

        return from_supervision(detections, labels, **kw)

    def __getitem__(self, index: Any) -> Detections:
        """Boolean mask, integer array or slice -> the selected boxes (labels and metadata kept)."""
        if isinstance(index, int):
            index = [index]
        return Detections(
            self.xyxy[index], self.confidence[index], self.class_id[index], self.labels,
            {k: np.asarray(v)[index] for k, v in self.data.items()}, self.path, self.image_size, self.meta,
        )

    def rescaled(self, size: tuple[int, int]) -> Detections:
        """Boxes mapped from ``image_size`` (the working image) to ``size`` = (W, H) of the original."""
        sx, sy = size[0] / max(1, self.image_size[0]), size[1] / max(1, self.image_size[1])
        xyxy = self.xyxy * np.array([sx, sy, sx, sy], np.float32)
        return Detections(xyxy, self.confidence, self.class_id, self.labels, self.data, self.path, size, self.meta,
                          self.files)

    def box_dicts(self) -> list[dict[str, Any]]:
        """One dict per box: ``{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}`` plus its data."""
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (_f32(v) for v in self.xyxy[i])
            item: dict[str, Any] = {"label": self.labels[self.class_id[i]], "score": _f32(self.confidence[i]),
                                    "box": {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}}
            for key, value in self.data.items():
                v = value[i]
                item[key] = v.item() if isinstance(v, np.generic) else v
            out.append(item)
        return out

    def to_dict(self) -> dict[str, Any]:
        return _with_files({"path": self.path, "detections": self.box_dicts(), **self.meta}, self.files)



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
    files: dict[str, str] = field(default_factory=dict)

    def rescaled(self, size: tuple[int, int]) -> Grounding:
        """The boxes mapped to ``size`` = (W, H) of the original image."""
        return dataclasses.replace(self, detections=self.detections.rescaled(size))

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
                item["present"] = _f32(self.present[k])
            if k < len(self.decided_by):
                item["decided_by"] = self.decided_by[k]
        extra = {"parser": self.parser} if self.parser else {}
        if self.notes:
            extra["notes"] = list(self.notes)
        return _with_files({"path": self.path, "caption": self.caption, "phrases": out, **extra}, self.files)



@dataclass
class Sketch:
    """A finished CLIPasso sketch of one image: ``output`` is the :class:`clipkit.clipasso.SketchOutput`
    (control points ``[N, 4, 2]`` canvas px, stroke width, rendered ``alpha`` ``[H, W]`` in [0, 1], loss,
    iterations, seed, seconds); ``files`` the SVG/PNG/GIF written for it."""

    path: str
    output: Any
    files: dict[str, str] = field(default_factory=dict)

    @property
    def svg(self) -> str:
        """The sketch as an SVG document (one cubic-Bézier ``<path>`` per stroke)."""
        from clipkit.svg import to_svg

        return to_svg(self.output.points, self.output.width, self.output.size)

    def to_dict(self) -> dict[str, Any]:
        out = self.output
        data = {"path": self.path, "loss": _f32(out.loss), "iterations": out.iterations,
                "best_iteration": out.best_iteration, "seed": out.seed, "seconds": round(float(out.seconds), 3)}
        return _with_files(data, self.files)



Result = ErrorRecord | Classification | Segmentation | Detections | Grounding | Sketch
