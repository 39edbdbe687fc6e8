"""ViLD-style open-vocabulary detection on any CLIP (``clipkit detect``).

ViLD (Gu et al., ICLR 2022; tensorflow/tpu ``models/official/detection/projects/vild``):

1. class-agnostic proposals (here :mod:`clipkit.proposals`: the connected components of the per-label dense
   score maps from the one dense forward pass — grid refined by sub-patch shifted passes, segment's background
   cosine cut, boxes grown by 0.15 patch — plus selective search on request);
2. a region embedding per proposal (here :mod:`clipkit.regions`: ``image`` = ViLD-image crops at 1× + 1.5×,
   ``fast`` = RoIAlign-pooled dense patch embeddings from one forward pass);
3. classifier = L2-normalised label text embeddings (prompt ensemble,
   :func:`clipkit.prompts.text_embeddings`) plus background; ``logits = cos / τ`` with τ = 0.01
   (``frcnn_head.temperature: 100`` in ``vild_config.py``), softmax over background + labels. As in the ViLD
   Colab demo the background is an ordinary text prompt ("background") and boxes whose
   top class is background are dropped;
4. ``ensemble``: geometric mean of the two paths' probabilities, ViLD's weighting for novel classes (every
   label is novel here): ``p = p_image^λ · p_fast^(1-λ)``, λ = 2/3;
5. per-class NMS 0.5 (``torchvision.ops.batched_nms``), score threshold, at most ``max_detections``
   (ViLD: 300; here 100).

Deviations (no trained ViLD detector, CPU): no RPN (training-free proposals from the dense score maps), no box
regression, no learned background embedding (text prompts, plus the model's calibrated cosine cut in the score
maps), the fast path pools training-free dense CLIP features instead of distilled RoI features; crops are padded
to a square rather than stretched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipkit.dense import min_cosine_for
from clipkit.proposals import propose, score_maps_from_patches
from clipkit.regions import (
    default_variant,
    dense_patches,
    fast_embeddings,
    image_embeddings,
    image_tensor,
    patch_pixels,
    region_config,
)

__all__ = [
    "PATHS",
    "DetectConfig",
    "class_probabilities",
    "detect",
    "detect_image",
    "iter_detect",
    "make_config",
    "postprocess",
    "score_maps_from_patches",
    "uses_selective_search",
]

PATHS = ("image", "fast", "ensemble")


@dataclass(frozen=True)
class DetectConfig:
    """Every default of ``detect`` (the CLI passes only what the user set)."""

    path: str = "ensemble"  # region embeddings: "image" | "fast" | "ensemble"
    background: tuple[str, ...] = ("background",)  # background prompt(s), softmax columns after the labels
    temperature: float | None = 100.0  # ViLD: logits = cos / 0.01; None: the model's own logit scale
    ensemble_weight: float = 2 / 3  # λ, exponent of the image path in the geometric mean (ViLD novel classes)
    nms_iou: float = 0.5  # ViLD per-class NMS
    score_threshold: float = 0.3  # drop (box, label) pairs below this probability
    max_detections: int = 100  # per image
    drop_background: bool = True  # drop boxes whose best class is a background prompt (ViLD Colab)
    score_map_proposals: bool = True  # boxes from the dense per-label score maps (connected components)
    # score-map background: a pixel whose best label cosine is below this gives no box (segment's rule);
    # None = the model's calibrated cut (clipkit.json, shapes-clip), -1 = off
    min_cosine: float | None = None
    # add selective-search boxes to the score-map boxes (always on when score_map_proposals is off). Off by
    # default: on the shapes world its boxes are mostly parts or pairs of objects that a CLIP crop still names
    # confidently, and with no trained RPN nothing ranks them down (bench/results/detect.md)
    selective_search: bool = False
    templates: Any = None  # prompt template set (None: the model's default)
    proposals: dict[str, Any] = field(default_factory=dict)  # ProposalConfig overrides
    regions: dict[str, Any] = field(default_factory=dict)  # RegionConfig overrides


def make_config(**options: Any) -> DetectConfig:
    """A :class:`DetectConfig` from keyword options; unknown names or bad values raise ``UsageError``."""
    from clipkit.errors import UsageError
    from clipkit.options import config_from_options

    cfg = config_from_options(DetectConfig, "detect", options)
    if cfg.path not in PATHS:
        raise UsageError(f"--path must be one of {', '.join(PATHS)}, got {cfg.path!r}")
    if not 0.0 <= cfg.ensemble_weight <= 1.0:
        raise UsageError("ensemble weight must be in [0, 1]")
    if not 0.0 <= cfg.score_threshold <= 1.0:
        raise UsageError("score threshold must be in [0, 1]")
    if cfg.max_detections < 1:
        raise UsageError("max detections must be at least 1")
    return cfg


def uses_selective_search(cfg: DetectConfig) -> bool:
    """Whether ``cfg``'s proposals include selective search (asked for, or the only source left)."""
    return cfg.selective_search or not cfg.score_map_proposals


def class_probabilities(region_emb: torch.Tensor, class_emb: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """``softmax(temperature · cos)`` over the classes: ``[K, D] × [C, D] → [K, C]`` float32."""
    return (temperature * region_emb.float() @ class_emb.float().T).softmax(-1)


def postprocess(boxes: np.ndarray, probs: torch.Tensor, n_labels: int, cfg: DetectConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ViLD post-processing of ``probs`` ``[K, n_labels + n_background]`` for ``boxes`` ``[K, 4]`` XYXY.

    Boxes whose arg-max column is a background prompt are dropped (``drop_background``); the remaining
    (box, label) pairs with probability ≥ ``score_threshold`` go through per-class NMS and the best
    ``max_detections`` are kept. Returns ``(xyxy [N,4] float32, score [N] float32, class_id [N] int64)``
    sorted by score (descending).
    """
    from torchvision.ops import batched_nms

    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if len(boxes) == 0:
        return empty
    probs = probs.float().cpu()
    keep_box = probs.argmax(1) < n_labels if cfg.drop_background else torch.ones(len(boxes), dtype=torch.bool)
    cls_probs = probs[:, :n_labels]
    box_idx, cls_idx = torch.nonzero((cls_probs >= cfg.score_threshold) & keep_box[:, None], as_tuple=True)
    if len(box_idx) == 0:
        return empty
    scores = cls_probs[box_idx, cls_idx]
    b = torch.from_numpy(np.asarray(boxes, np.float32))[box_idx]
    keep = batched_nms(b, scores, cls_idx, cfg.nms_iou)[: cfg.max_detections]  # sorted by score
    return b[keep].numpy(), scores[keep].numpy().astype(np.float32), cls_idx[keep].numpy().astype(np.int64)


def detect_image(model: Any, image: Image.Image, labels: Sequence[str], class_emb: torch.Tensor,
                 cfg: DetectConfig, *, path: str = "", timings: dict[str, float] | None = None) -> Any:
    """Detect ``labels`` in one PIL ``image``; ``class_emb`` ``[len(labels) + n_background, D]`` are the label
    text embeddings followed by the background ones. Returns a ``Detections`` (boxes in ``image`` pixels).

    ``timings`` (optional dict) accumulates seconds spent in ``proposals`` and ``regions`` (embedding +
    scoring) for benchmarks.
    """
    from clipkit.results import Detections

    image = image.convert("RGB")
    rcfg = region_config(cfg.regions)
    t0 = time.perf_counter()
    n_labels = len(labels)
    maps = patches = None
    if cfg.score_map_proposals or cfg.path != "image":
        patches = dense_patches(model, image, rcfg)  # the one dense forward pass, shared with the fast path
    if cfg.score_map_proposals:
        variant = rcfg.dense_variant or default_variant(model)
        # labels + background prompts: a pixel whose best class is background gives no box (ClearCLIP), nor one
        # whose best label cosine is under the cut
        maps = score_maps_from_patches(model, patches, class_emb, variant, image.size, n_labels=n_labels,
                                       min_cosine=min_cosine_for(model, variant, cfg.min_cosine))
    proposal_cfg = {"use_selective_search": uses_selective_search(cfg), **cfg.proposals}
    boxes = propose(image, score_maps=maps, n_labels=n_labels, patch_px=patch_pixels(model, image, rcfg),
                    **proposal_cfg)
    t1 = time.perf_counter()
    temperature = model.logit_scale if cfg.temperature is None else cfg.temperature
    probs = None
    if cfg.path in ("image", "ensemble"):
        emb = image_embeddings(model, image, boxes, cfg=rcfg, x=image_tensor(model, image))
        probs = class_probabilities(emb, class_emb, temperature)
    if cfg.path in ("fast", "ensemble"):
        emb = fast_embeddings(model, image, boxes, cfg=rcfg, patches=patches)
        p_fast = class_probabilities(emb, class_emb, temperature)
        lam = cfg.ensemble_weight
        probs = p_fast if probs is None else probs.pow(lam) * p_fast.pow(1.0 - lam)
    assert probs is not None
    xyxy, score, cls = postprocess(boxes, probs, n_labels, cfg)
    t2 = time.perf_counter()
    if timings is not None:
        timings["proposals"] = timings.get("proposals", 0.0) + (t1 - t0)
        timings["regions"] = timings.get("regions", 0.0) + (t2 - t1)
    return Detections(xyxy=xyxy, confidence=score, class_id=cls, labels=list(labels), path=path,
                      image_size=image.size)


def classifier(model: Any, labels: Sequence[str], cfg: DetectConfig) -> torch.Tensor:
    """``[len(labels) + len(background), D]`` text embeddings: labels first, then background prompts."""
    from clipkit.prompts import text_embeddings

    return text_embeddings(model, [*labels, *cfg.background], cfg.templates)


def iter_detect(paths: Sequence[str], labels: Sequence[str], model: Any, *, workers: int | None = None,
                quiet: bool = True, skip: set[str] | None = None, timings: dict[str, float] | None = None,
                **options: Any) -> Iterator[Any]:
    """Detect ``labels`` in image files, in order: a ``Detections`` or an ``ErrorRecord`` per input.

    ``options``: :class:`DetectConfig` fields. Images are decoded ahead in worker processes (core runner).
    ``timings``: see :func:`detect_image` (the label text embeddings, computed once, are not in it).
    """
    from clipkit.runner import run_over_images

    cfg = _checked_config(labels, options, model)
    labels = list(labels)
    class_emb = classifier(model, labels, cfg)

    def process(batch: Any) -> list[Any]:
        return [detect_image(model, item.image, labels, class_emb, cfg, path=item.path, timings=timings)
                for item in batch.ok]

    yield from run_over_images(paths, process, batch_size=1, workers=workers, keep_image=True, quiet=quiet,
                               skip=skip, description="detect")


def _checked_config(labels: Sequence[str], options: dict[str, Any], model: Any) -> DetectConfig:
    from clipkit.dense import check_shifts
    from clipkit.errors import UsageError

    cfg = make_config(**options)
    if cfg.score_map_proposals or cfg.path != "image":  # a dense pass: its shifts must fit the model
        check_shifts(model, region_config(cfg.regions).dense_shifts)
    if not labels:
        raise UsageError("no labels given; pass --labels 'a,b' or --labels-file FILE")
    overlap = set(labels) & set(cfg.background)
    if overlap:
        raise UsageError(f"label(s) {sorted(overlap)} are also background prompts; rename them")
    return cfg


def detect(images: Any, labels: str | Sequence[str], *, model: Any = None, pretrained: str | None = None,
           device: str | None = None, precision: str | None = None, **options: Any) -> list[Any]:
    """Detect ``labels`` in ``images``; the Python face of ``clipkit detect``.

    ``images``: a path, folder or glob, a PIL image or HWC uint8 array, or a list of these. ``labels``: ``"a,b"``
    or a list. ``options``: :class:`DetectConfig` fields (``path="fast"``, ``score_threshold=0.5`` …).
    Returns one ``Detections`` (boxes XYXY in original pixels) or ``ErrorRecord`` per image, in order.
    """
    from clipkit.images import as_pil, expand_inputs
    from clipkit.prompts import parse_labels
    from clipkit.registry import LoadedModel, load_model
    from clipkit.results import ErrorRecord

    loaded = model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device,
                                                                      precision=precision)
    label_list = parse_labels(labels)
    items = images if isinstance(images, list | tuple) else [images]
    if all(isinstance(i, str) or hasattr(i, "__fspath__") for i in items):
        return list(iter_detect(expand_inputs([str(i) for i in items]), label_list, loaded, **options))
    cfg = _checked_config(label_list, options, loaded)
    class_emb = classifier(loaded, label_list, cfg)
    out: list[Any] = []
    for index, item in enumerate(items):
        name = str(item) if isinstance(item, str) else f"<image {index}>"
        try:
            image = as_pil(item)
        except Exception as exc:  # one bad in-memory image must not lose the others
            out.append(ErrorRecord(name, str(exc)))
            continue
        out.append(detect_image(loaded, image, label_list, class_emb, cfg, path=name))
    return out
