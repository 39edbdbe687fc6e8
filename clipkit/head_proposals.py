"""Candidate boxes from a trained segmentation head: ReCLIP's external proposals, for a CLIP that has one.

ReCLIP scores boxes it does not make: they come from a detector trained apart (MAttNet's proposals on RefCOCO).
clipkit's training-free proposals are the connected components of the phrases' dense score maps; on a model that
ships a trained LSeg head (shapes-clip: ``lseg-shapes``, named by ``ground_proposal_head`` in its clipkit.json)
the head's segmentation over the model's vocabulary adds its components as further candidates. On validation
scenes they cover more objects (0.93 of the objects at IoU ≥ 0.5 against 0.86 for the score maps of every
vocabulary name, stream 78), mostly touching or partly hidden ones whose score-map component falls short.

Only the head's objects that the phrases' own boxes touch join (:func:`snap_to_head`), and whether a phrase is
present at all is still decided over its own boxes alone: a phrase that names nothing in the image must not
gain a tight box around some other object (on validation that took absent phrases answered empty from 0.96
to 0.73–0.77).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["Snapped", "head_boxes", "proposal_head", "snap_to_head"]

#: A head box joins the candidates when it overlaps one of the phrases' own boxes at least this much.
TOUCH_IOU = 0.2
#: An own box overlapping a joined head box by more than this is the same object (kept for presence only:
#: duplicates would split a phrase's probability and miscount ordinals).
SAME_IOU = 0.5

#: (head spec, id of the model) -> (model, head): one load per process (the text embeddings are cached by the prompt
#: engine)
_HEADS: dict[tuple[str, int], tuple[Any, Any]] = {}


def proposal_head(model: Any, requested: str | None) -> str | None:
    """The head to take proposals from: ``requested`` (``"none"``: no head), else the model's
    ``ground_proposal_head`` (its clipkit.json), else none."""
    name = requested if requested is not None else (getattr(model, "meta", None) or {}).get("ground_proposal_head")
    return None if name in (None, "", "none") else str(name)


def _head(model: Any, spec: str, names: list[str]) -> tuple[Any, torch.Tensor]:
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_head

    key = (spec, id(model))
    if key not in _HEADS:
        _HEADS[key] = (model, load_head(spec, model).eval())  # the model is kept so its id stays unique
    head = _HEADS[key][1]
    return head, text_embeddings(model, [*names, *head.cfg.background], head.cfg.templates)


@torch.inference_mode()
def head_boxes(model: Any, image: Image.Image, spec: str, names: list[str], *, threshold: float = 0.3,
               dilate: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``([K, 4] float32 XYXY boxes in image pixels, [K] int64 index into names)``: the 8-connected components
    of each vocabulary name's pixels in the head's segmentation (arg-max class, probability ≥ ``threshold``;
    background prompts give no box), as :func:`clipkit.proposals.boxes_from_score_maps` cuts score maps, decided
    cell by cell at the working grid (:func:`clipkit.pixelwise.label_pixels`) instead of on the full volume."""
    from clipkit.lseg import lseg_logits
    from clipkit.pixelwise import label_pixels
    from clipkit.proposals import boxes_from_label_map

    head, text = _head(model, spec, names)
    logits = lseg_logits(model, head, image, text, full_size=False)  # [names + background, h, w], working grid
    decided = label_pixels(logits.cpu(), (image.size[1], image.size[0]), len(names), threshold=threshold)
    return boxes_from_label_map(decided.label_map.numpy(), len(names), dilate=dilate)


@dataclass
class Snapped:
    """:func:`snap_to_head`'s answer: ``boxes`` ``[K + E, 4]`` (the own boxes first), ``own`` and ``pick``
    ``[K + E]`` bool (see there), ``seen``: the vocabulary names the head segmented anywhere in the image."""

    boxes: np.ndarray
    own: np.ndarray
    pick: np.ndarray
    seen: set[str]


def snap_to_head(model: Any, image: Image.Image, spec: str, names: list[str], boxes: np.ndarray) -> Snapped:
    """The phrases' own candidate ``boxes`` ``[K, 4]`` with the head's outlines of the objects they touch.

    ``own`` marks the own boxes (first); after them each head box overlapping an own box at IoU ≥
    :data:`TOUCH_IOU`. ``pick``: the candidates a box is chosen from — every joined head box, and each own box
    that none of them covers (IoU > :data:`SAME_IOU`).
    """
    from torchvision.ops import box_iou

    own_boxes = torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4))
    found, labels = head_boxes(model, image, spec, names)
    seen = {names[int(k)] for k in labels}
    extra = torch.from_numpy(found).reshape(-1, 4)
    if len(extra) and len(own_boxes):
        overlap = box_iou(extra, own_boxes)  # [E, K]
        joined = overlap.amax(1) >= TOUCH_IOU
        extra, overlap = extra[joined], overlap[joined]
        covered = (overlap > SAME_IOU).any(0) if len(extra) else torch.zeros(len(own_boxes), dtype=torch.bool)
    else:
        extra, covered = extra[:0], torch.zeros(len(own_boxes), dtype=torch.bool)
    k, e = len(own_boxes), len(extra)
    own = np.concatenate([np.ones(k, bool), np.zeros(e, bool)])
    pick = np.concatenate([~covered.numpy(), np.ones(e, bool)])
    return Snapped(torch.cat([own_boxes, extra]).numpy(), own, pick, seen)
