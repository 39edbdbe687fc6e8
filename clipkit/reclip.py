"""ReCLIP's spatial reasoning over candidate boxes, and calibrated phrase probabilities (pure numpy).

ReCLIP (Subramanian et al., ACL 2022; allenai/reclip ``interpreter.py``, ``methods/parse.py``, ``lattice.py``):

* each noun phrase gets a distribution over the candidate boxes, the softmax of its CLIP scores
  (``Environment.filter``);
* a binary spatial relation is a 0/1 matrix ``R[i, j]`` = "box i <rel> box j" decided on box centres (left of:
  centre x smaller; above: centre y smaller) or areas (bigger/smaller than); the subject's distribution is
  multiplied by ``Σ_j R[i, j] · p_anchor[j]`` and renormalised (the product lattice: meet = product, join over
  disjoint events = sum);
* a superlative uses the same matrix against the phrase's own distribution:
  ``p[i] ∝ p[i] · Σ_j p[j] · R[i, j]`` ("leftmost" = left of the others).

Additions (deviations, named in docs/ground.md): ``next to`` (ReCLIP has none) is a graded matrix
``exp(-d_ij / σ)`` on centre distance, σ = 0.1 × the image diagonal, zero on the diagonal; ordinals ("the
second from the left") and the optional ``"count"`` superlative rule use per-box presence probabilities
``q`` (see :func:`box_presence`): box i is the k-th when exactly k−1 present boxes precede it, a
Poisson-binomial probability. Calibration (:func:`phrase_distribution`, :func:`fit_calibration`) replaces
ReCLIP's plain softmax with a temperature and a *no-object* option fitted on validation scenes, so a phrase
that names nothing in the image can be answered with no box.

Boxes are ``[K, 4]`` float XYXY pixels; every distribution is a float64 ``[K]`` array.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["MODES", "SUPERLATIVE_BASE", "box_calibration", "box_presence", "fit_box_calibration", "fit_calibration",
           "margins", "ordinal_superlative", "phrase_calibration", "phrase_distribution", "relate", "relation_matrix",
           "resolve", "superlative"]

# superlative → the relation "box i is more <kind> than box j" it is built from (ReCLIP heuristics.SUPERLATIVES)
SUPERLATIVE_BASE = {"leftmost": "left of", "rightmost": "right of", "topmost": "above", "bottommost": "below",
                    "biggest": "bigger than", "smallest": "smaller than"}


def _centres(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2


def relation_matrix(kind: str, boxes: np.ndarray, image_size: tuple[int, int] | None = None,
                    next_to_scale: float = 0.1) -> np.ndarray:
    """``R[i, j]`` ∈ [0, 1]: box i is ``kind`` box j (``[K, K]`` float64; ReCLIP ``Environment`` rules).

    ``next to``: ``exp(-d_ij / σ)``, σ = ``next_to_scale`` × the diagonal of ``image_size`` (W, H) (default:
    of the boxes' extent)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy = _centres(b)
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    if kind == "left of":
        return (cx[:, None] < cx[None, :]).astype(np.float64)
    if kind == "right of":
        return (cx[:, None] > cx[None, :]).astype(np.float64)
    if kind == "above":
        return (cy[:, None] < cy[None, :]).astype(np.float64)
    if kind == "below":
        return (cy[:, None] > cy[None, :]).astype(np.float64)
    if kind == "bigger than":
        return (area[:, None] > area[None, :]).astype(np.float64)
    if kind == "smaller than":
        return (area[:, None] < area[None, :]).astype(np.float64)
    if kind == "next to":
        if image_size is not None:
            diag = float(np.hypot(*image_size))
        else:
            diag = float(np.hypot(np.ptp(b[:, [0, 2]]), np.ptp(b[:, [1, 3]]))) if len(b) else 1.0
        d = np.hypot(cx[:, None] - cx[None, :], cy[:, None] - cy[None, :])
        out = np.exp(-d / max(next_to_scale * diag, 1e-6))
        np.fill_diagonal(out, 0.0)
        return out
    raise ValueError(f"unknown relation {kind!r}")


def _normalise(p: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    total = float(p.sum())
    return p / total if total > 0 else fallback


def relate(p_subject: np.ndarray, p_anchor: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """ReCLIP relation: ``p[i] ∝ p_subject[i] · Σ_j matrix[i, j] · p_anchor[j]`` (``p_subject`` unchanged when
    no box satisfies the relation)."""
    p = np.asarray(p_subject, np.float64)
    return _normalise(p * (matrix @ np.asarray(p_anchor, np.float64)), p)


def superlative(p: np.ndarray, kind: str, boxes: np.ndarray) -> np.ndarray:
    """ReCLIP superlative: ``p[i] ∝ p[i] · Σ_j p[j] · R[i, j]`` with ``R`` the relation of ``kind``
    (:data:`SUPERLATIVE_BASE`)."""
    p = np.asarray(p, np.float64)
    return _normalise(p * (relation_matrix(SUPERLATIVE_BASE[kind], boxes) @ p), p)


def ordinal_superlative(q: np.ndarray, kind: str, boxes: np.ndarray, ordinal: int = 1) -> np.ndarray:
    """The ``ordinal``-th ``kind`` box, from per-box presence probabilities ``q`` ``[K]`` (independent):
    ``p[i] ∝ q[i] · P(exactly ordinal−1 present boxes j ≠ i precede i)``, where j precedes i with probability
    ``q[j] · R[j, i]`` (``R``: the relation of ``kind``). A Poisson-binomial distribution per box."""
    q = np.clip(np.asarray(q, np.float64), 0.0, 1.0)
    before = relation_matrix(SUPERLATIVE_BASE[kind], boxes).T * q[None, :]  # [i, j]: j is present and precedes i
    np.fill_diagonal(before, 0.0)
    out = np.zeros(len(q))
    k = max(int(ordinal), 1) - 1
    for i in range(len(q)):
        dist = np.zeros(k + 2)
        dist[0] = 1.0
        for r in before[i]:  # add one Bernoulli(r) at a time; counts above k are folded into the last bin
            dist[1:] = dist[1:] * (1 - r) + dist[:-1] * r
            dist[0] *= 1 - r
        out[i] = q[i] * dist[k]
    return _normalise(out, q / q.sum() if q.sum() > 0 else np.full(len(q), 1 / max(len(q), 1)))


def phrase_distribution(logits: np.ndarray, temperature: float, no_object: float) -> tuple[np.ndarray, float]:
    """Calibrated softmax over the candidates plus a no-object option: ``(p_box [K], p_none)``, where
    ``p ∝ exp(logit / T)`` and the no-object option has logit ``no_object``. ``p_box.sum() + p_none == 1``."""
    z = np.append(np.asarray(logits, np.float64), no_object) / float(temperature)
    z = np.exp(z - z.max())
    z /= z.sum()
    return z[:-1], float(z[-1])


def box_presence(logits: np.ndarray, temperature: float, no_object: float) -> np.ndarray:
    """Per-box probability that the box shows the phrase: the same calibration with this box alone against the
    no-object option, ``sigmoid((logit − no_object) / T)`` ``[K]``."""
    return 1.0 / (1.0 + np.exp(-(np.asarray(logits, np.float64) - no_object) / float(temperature)))


def fit_calibration(samples: Iterable[tuple[np.ndarray, int]], temperatures: Sequence[float] | None = None,
                    no_objects: Sequence[float] | None = None) -> dict[str, float]:
    """Temperature and no-object logit minimising the negative log-likelihood of the right answers.

    ``samples``: ``(logits [K], target)`` per phrase, target = index of the correct candidate or ``-1`` when the
    right answer is "no object" (the phrase names nothing in the image, or no candidate matches it). Grid
    search (defaults: T = 0.25 · 1.25^i for i < 19, i.e. 0.25…13.9; the no-object logit at 61 evenly
    spaced values over the observed logit range). Returns ``{"temperature",
    "no_object_logit", "nll"}`` (mean NLL per phrase)."""
    data = [(np.asarray(lg, np.float64), int(t)) for lg, t in samples]
    if not data:
        raise ValueError("no calibration samples")
    every = np.concatenate([lg for lg, _ in data if len(lg)]) if any(len(lg) for lg, _ in data) else np.zeros(1)
    temps = temperatures or [0.25 * 1.25 ** i for i in range(19)]
    biases = no_objects or list(np.linspace(float(every.min()), float(every.max()), 61))
    best = {"temperature": 1.0, "no_object_logit": 0.0, "nll": float("inf")}
    for t in temps:
        for b in biases:
            nll = 0.0
            for lg, target in data:
                p_box, p_none = phrase_distribution(lg, t, b)
                nll -= np.log(max(p_none if target < 0 else p_box[target], 1e-12))
            nll /= len(data)
            if nll < best["nll"]:
                best = {"temperature": float(t), "no_object_logit": float(b), "nll": float(nll)}
    return best


def fit_box_calibration(logits: np.ndarray, labels: np.ndarray, temperatures: Sequence[float] | None = None,
                        no_objects: Sequence[float] | None = None) -> dict[str, float]:
    """Per-box calibration of :func:`box_presence`: ``(T, no-object logit)`` minimising the binary NLL of
    ``labels`` [N] (1 = the box shows the phrase: IoU ≥ 0.5 with its object) given box ``logits`` [N]. Grid
    search as :func:`fit_calibration`. Returns ``{"temperature", "no_object_logit", "nll"}``."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, bool)
    if not len(x):
        raise ValueError("no calibration samples")
    temps = temperatures or [0.25 * 1.25 ** i for i in range(19)]
    biases = no_objects or list(np.linspace(float(x.min()), float(x.max()), 81))
    best = {"temperature": 1.0, "no_object_logit": 0.0, "nll": float("inf")}
    for t in temps:
        for b in biases:
            q = np.clip(box_presence(x, t, b), 1e-12, 1 - 1e-12)
            nll = float(-(np.log(q[y]).sum() + np.log(1 - q[~y]).sum()) / len(x))
            if nll < best["nll"]:
                best = {"temperature": float(t), "no_object_logit": float(b), "nll": nll}
    return best


MODES = ("constant", "background", "vocabulary")


def margins(logits: np.ndarray, calibration: dict, background: np.ndarray | None = None,
            competitors: np.ndarray | None = None) -> np.ndarray:
    """Box logits ``[K, ...]`` measured against what the calibration's no-object option is relative to, so that
    the calibrated no-object logit is a constant: ``mode="constant"``: the logits as they are;
    ``"background"``: minus the image's best background-prompt logit (``background`` [K]); ``"vocabulary"``:
    box by box, minus the box's best logit among the names the phrase does *not* cover and the background
    prompts (``competitors`` [K, ...], ``-inf`` where there are none) — "this box looks more like the phrase than
    like anything else the model can name"."""
    x = np.asarray(logits, np.float64)
    mode = calibration.get("mode", "background")
    if mode not in MODES:
        raise ValueError(f"unknown calibration mode {mode!r}; one of {', '.join(MODES)}")
    bg = np.asarray(background, np.float64) if background is not None and len(background) else None
    if mode == "background":
        return x - (float(bg.max()) if bg is not None else 0.0)
    if mode == "vocabulary":
        comp = np.full(x.shape, -np.inf) if competitors is None else np.asarray(competitors, np.float64)
        if bg is not None:
            comp = np.maximum(comp, bg.reshape(-1, *([1] * (x.ndim - 1))))
        return x - np.where(np.isfinite(comp), comp, 0.0)
    return x


def box_calibration(calibration: dict) -> tuple[float, float]:
    """``(T, no-object logit)`` of :func:`box_presence`: ``box_temperature`` / ``box_no_object_logit`` (fitted per
    box, :func:`fit_box_calibration`) when the calibration has them, else the phrase-level ones."""
    if "box_temperature" not in calibration:
        return float(calibration.get("temperature", 1.0)), float(calibration.get("no_object_logit", 0.0))
    return float(calibration["box_temperature"]), float(calibration["box_no_object_logit"])


def phrase_calibration(calibration: dict, phrase: object) -> dict:
    """The calibration of one phrase: ``calibration["expanded"]`` (fitted on its own) for a phrase scored over
    several vocabulary names ("the circle", "the red one": the max over names inflates its logits), else the
    top level."""
    if getattr(phrase, "expanded", False) and "expanded" in calibration:
        return calibration["expanded"]
    return calibration


def resolve(expression: object, boxes: np.ndarray, logits: np.ndarray, calibration: dict, *,
            background: np.ndarray | None = None, competitors: np.ndarray | None = None,
            image_size: tuple[int, int] | None = None,
            superlative_rule: str = "reclip", prior: str = "softmax", next_to_scale: float = 0.1) -> list[dict]:
    """Execute a parsed expression (:class:`clipkit.expressions.Expression`) over candidate ``boxes`` [K, 4]
    with per-phrase logits ``[K, P]`` (mean CLIP logit of box k for phrase p), optional background-prompt
    logits ``[K]`` and competitor logits ``[K, P]`` (see :func:`margins`).

    Anchors are resolved before their subjects (ReCLIP's recursion), relations before superlatives. Returns
    one dict per phrase: ``{"best": box index or None, "score": presence × p(best), "present": 1 − p_none,
    "distribution": [K], "decided_by": None | {"relation", "anchor"} | {"superlative", "ordinal"},
    "changed": whether it moved the arg-max}``. ``calibration``: ``{"temperature", "no_object_logit", "mode"}`` (+
    optional ``box_temperature``, ``box_no_object_logit``); ``superlative_rule``: ``"reclip"`` (ReCLIP's
    formula; ordinals > 1 always use the count rule) or ``"count"`` (:func:`ordinal_superlative` for every
    superlative). ``prior``: the subject distribution a relation reweights — ``"softmax"`` (ReCLIP: the softmax
    over the candidates) or ``"presence"`` (each box's own calibrated probability, :func:`box_presence`,
    normalised: two boxes that both clearly show "the circle" weigh the same, however their scores differ).
    ``next_to_scale``: see :func:`relation_matrix`.
    """
    phrases = expression.phrases  # type: ignore[attr-defined]
    n, k = len(phrases), len(boxes)
    logits = np.asarray(logits, np.float64).reshape(k, n)
    comp = np.full((k, n), -np.inf) if competitors is None else np.asarray(competitors, np.float64).reshape(k, n)
    out: list[dict] = [{"best": None, "score": 0.0, "present": 0.0, "distribution": np.zeros(k),
                        "decided_by": None, "changed": False} for _ in range(n)]
    if k == 0:
        return out
    for i in reversed(range(n)):  # anchors follow their subjects in the caption
        if phrases[i].null:
            continue
        cal = phrase_calibration(calibration, phrases[i])
        t, b = float(cal.get("temperature", 1.0)), float(cal.get("no_object_logit", 0.0))
        tb, bb = box_calibration(cal)
        x = margins(logits[:, i], cal, background, comp[:, i])
        p_box, p_none = phrase_distribution(x, t, b)
        dist = _normalise(p_box, np.full(k, 1 / k))
        plain_best = int(np.argmax(dist))
        decided = None
        rel = expression.relation_of(i)  # type: ignore[attr-defined]
        sup = expression.superlative_of(i)  # type: ignore[attr-defined]
        if rel is not None and not phrases[rel.anchor].null:
            if prior == "presence":
                dist = _normalise(box_presence(x, tb, bb), dist)
            matrix = relation_matrix(rel.kind, boxes, image_size, next_to_scale)
            dist = relate(dist, out[rel.anchor]["distribution"], matrix)
            decided = {"relation": rel.kind, "anchor": phrases[rel.anchor].text}
        if sup is not None:
            if sup.ordinal == 1 and superlative_rule == "reclip":
                dist = superlative(dist, sup.kind, boxes)
            else:
                q = box_presence(x, tb, bb) * (dist / dist.max() if rel is not None else 1.0)
                dist = ordinal_superlative(q, sup.kind, boxes, sup.ordinal)
            decided = {**(decided or {}), "superlative": sup.kind, "ordinal": sup.ordinal}
        best = int(np.argmax(dist))
        present = 1.0 - p_none
        out[i] = {"best": best, "score": present * float(dist[best]), "present": present, "distribution": dist,
                  "decided_by": decided, "changed": best != plain_best}
    return out
