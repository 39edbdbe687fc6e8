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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipkit.configs import DetectConfig
from clipkit.dense import min_cosine_for
from clipkit.methods import Sample
from clipkit.proposals import propose, score_maps_from_patches
from clipkit.regions import (
    default_variant,
    dense_patches,
    dense_patches_batch,
    fast_embeddings,
    image_embeddings,
    image_tensor,
    patch_pixels,
    region_config,
)

__all__ = ["PATHS", "DetectConfig", "DetectPredictor", "class_probabilities", "detect_image", "postprocess",
           "score_maps_from_patches"]

PATHS = ("image", "fast", "ensemble")


def class_probabilities(region_emb: torch.Tensor, class_emb: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """``softmax(temperature · cos)`` over the classes: ``[K, D] × [C, D] → [K, C]`` float32."""
    return (temperature * region_emb.float() @ class_emb.float().T).softmax(-1)


def postprocess(boxes: np.ndarray, probs: torch.Tensor, n_labels: int, cfg: DetectConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ViLD post-processing of ``probs`` ``[K, n_labels + n_background]`` for ``boxes`` ``[K, 4]`` XYXY.

    Boxes whose arg-max column is a background prompt are dropped (``drop_background``); the remaining
    (box, label) pairs with probability ≥ ``threshold`` go through per-class NMS and the best
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
    box_idx, cls_idx = torch.nonzero((cls_probs >= cfg.threshold) & keep_box[:, None], as_tuple=True)
    if len(box_idx) == 0:
        return empty
    scores = cls_probs[box_idx, cls_idx]
    b = torch.from_numpy(np.asarray(boxes, np.float32))[box_idx]
    keep = batched_nms(b, scores, cls_idx, cfg.nms_iou)[: cfg.max_detections]  # sorted by score
    return b[keep].numpy(), scores[keep].numpy().astype(np.float32), cls_idx[keep].numpy().astype(np.int64)


def detect_image(model: Any, image: Image.Image, labels: Sequence[str], class_emb: torch.Tensor,
                 cfg: DetectConfig, *, path: str = "", timings: dict[str, float] | None = None,
                 patches: torch.Tensor | None = None) -> Any:
    """Detect ``labels`` in one PIL ``image``; ``class_emb`` ``[len(labels) + n_background, D]`` are the label
    text embeddings followed by the background ones. Returns a ``Detections`` (boxes in ``image`` pixels).

    ``timings`` (optional dict) accumulates seconds spent in ``proposals`` and ``regions`` (embedding +
    scoring) for benchmarks. ``patches``: the image's dense patches when the caller computed them (a batch of
    images shares the forward passes: :func:`clipkit.regions.dense_patches_batch`).
    """
    from clipkit.results import Detections

    image = image.convert("RGB")
    rcfg = region_config(cfg.region_overrides)
    t0 = time.perf_counter()
    n_labels = len(labels)
    maps = None
    if patches is None and needs_dense_pass(cfg):
        patches = dense_patches(model, image, rcfg)  # the one dense forward pass, shared with the fast path
    if cfg.score_map_proposals:
        variant = rcfg.dense_variant or default_variant(model)
        # labels + background prompts: a pixel whose best class is background gives no box (ClearCLIP), nor one
        # whose best label cosine is under the cut
        maps = score_maps_from_patches(model, patches, class_emb, variant, image.size, n_labels=n_labels,
                                       min_cosine=min_cosine_for(model, variant, cfg.min_cosine))
    proposal_cfg = {"use_selective_search": cfg.uses_selective_search, **cfg.proposal_overrides}
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


def needs_dense_pass(cfg: DetectConfig) -> bool:
    """Whether detection runs the dense pass (score-map proposals or the fast region path)."""
    return cfg.score_map_proposals or cfg.path != "image"


def classifier(model: Any, labels: Sequence[str], cfg: DetectConfig) -> torch.Tensor:
    """``[len(labels) + len(background), D]`` text embeddings: labels first, then background prompts."""
    from clipkit.prompts import text_embeddings

    return text_embeddings(model, [*labels, *cfg.background], cfg.templates)


class DetectPredictor:
    """Labels + :class:`DetectConfig` → ``predict(samples)``: a :class:`Detections` per RGB image (boxes XYXY in
    the image's pixels). The label and background text embeddings are computed once. ``timings`` (a dict, for
    benchmarks) accumulates seconds spent in proposals and regions."""

    keep_image = True
    transform = None

    def __init__(self, model: Any, labels: Sequence[str], config: DetectConfig | None = None, *,
                 timings: dict[str, float] | None = None, **options: Any) -> None:
        from clipkit.dense import check_shifts
        from clipkit.errors import UsageError

        self.config = cfg = DetectConfig.of(config, **options)
        self.model, self.labels, self.timings = model, list(labels), timings
        if not self.labels:
            raise UsageError("no labels given; pass --labels 'a,b' or --labels-file FILE")
        overlap = set(self.labels) & set(cfg.background)
        if overlap:
            raise UsageError(f"label(s) {sorted(overlap)} are also background prompts; rename them")
        if needs_dense_pass(cfg):  # its shifts must fit the model
            check_shifts(model, region_config(cfg.region_overrides).dense_shifts)
        self.class_emb = classifier(model, self.labels, cfg)

    @torch.inference_mode()
    def predict(self, samples: list[Sample]) -> list[Any]:
        images = [s.image.convert("RGB") for s in samples]
        patches = (dense_patches_batch(self.model, images, region_config(self.config.region_overrides))
                   if needs_dense_pass(self.config) else [None] * len(images))
        return [detect_image(self.model, image, self.labels, self.class_emb, self.config, path=s.key,
                             timings=self.timings, patches=p) for s, image, p in zip(samples, images, patches,
                                                                                     strict=True)]
