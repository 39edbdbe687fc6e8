"""Open-vocabulary semantic segmentation, LSeg-style: per-pixel embeddings · label text embeddings, argmax.

Two sources of per-pixel embeddings behind one interface (``Segmenter``):

* training-free dense CLIP on any open_clip ViT (``clipkit.dense``: NACLIP by default, ClearCLIP, SCLIP,
  MaskCLIP, plain) — logits ``scale · cos(patch, text)``, sliding windows, bilinear upsampling;
* a trained LSeg head (``clipkit.lseg``) over the frozen model — logits ``cos(pixel, text) / 0.07``.

Background: extra *background prompts* join the labels as classes and map to 0 (SCLIP/NACLIP's stuff-class
approach), and/or a probability *threshold*: pixels whose best softmax probability is below it become
background (ClearCLIP's ``prob_thd``). Pixel probabilities are the softmax over labels + background prompts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipkit import dense
from clipkit.configs import SegmentConfig
from clipkit.errors import UsageError
from clipkit.methods import Sample
from clipkit.pixelwise import PixelLabels, label_pixels
from clipkit.prompts import text_embeddings
from clipkit.registry import LoadedModel
from clipkit.results import Segmentation

__all__ = ["DEFAULT_BACKGROUND", "SegmentConfig", "SegmentPredictor"]

#: Working-resolution logits held at once when images share the backbone's batches (256 MB as float32).
BATCH_FLOATS = 64 * 2**20

#: Background prompts used when none are given (the ClearCLIP/MaskCLIP convention of one "background" class).
DEFAULT_BACKGROUND: tuple[str, ...] = ("background",)


class SegmentPredictor:
    """Labels + :class:`SegmentConfig` → per-pixel labels; text embedded once.

    ``predict(samples)`` takes decoded RGB images and returns one :class:`Segmentation` each (label map at the
    original size, 0 = background, k = ``labels[k - 1]``; per-label probabilities ``[N, H, W]`` float32 only
    with ``config.scores``, the mean score of each label over its pixels always).
    ``head_module``: an ``LSegHead`` object instead of ``config.head`` (trainers pass the head they train).

    Config notes: ``min_cosine`` — pixels whose best label *cosine* (before the logit scale) is below it become
    background, training-free only; default: the model's calibrated value for the variant (``clipkit.json`` →
    ``segment_min_cosine``), ``-1`` turns it off. A deviation from the variants' papers (they use a background
    prompt or a softmax threshold): for a CLIP whose captions never name the background (shapes-clip) no
    background prompt wins, but background patches are less similar to every label.
    """

    keep_image = True
    transform = None

    def __init__(self, model: LoadedModel, labels: Sequence[str], config: SegmentConfig | None = None, *,
                 head_module: Any = None, **options: Any):
        from clipkit.registry import load_head

        self.config = SegmentConfig.of(config, **options)
        cfg = self.config
        self.labels = list(labels)
        if not self.labels:
            raise UsageError("give at least one label (--labels)")
        if len(self.labels) > 65534:
            raise UsageError("at most 65534 labels")
        self.model = model
        self.head = head_module if head_module is not None else (
            load_head(cfg.head, model) if cfg.head is not None else None)
        templates = cfg.templates
        if self.head is not None:
            default_bg = self.head.cfg.background
            if templates is None and self.head.cfg.templates is not None:
                templates = self.head.cfg.templates
        else:
            dense._visual(model)  # fail early with a clear message on unsupported towers
            dense.check_shifts(model, cfg.shifts)
            default_bg = list(DEFAULT_BACKGROUND)
        background = default_bg if cfg.background is None else list(cfg.background)
        self.background = [b for b in background if b not in self.labels]
        self.variant = cfg.variant or dense.default_variant(model)
        self.min_cosine = None if self.head is not None else dense.min_cosine_for(model, self.variant,
                                                                                  cfg.min_cosine)
        self.templates = templates
        # logits are scale · cos: the rule divides by the scale dense_logits used
        self._cos_scale = dense.logit_scale_for(model, self.variant) if cfg.scale is None else float(cfg.scale)
        self.text = text_embeddings(model, [*self.labels, *self.background], templates)
        self.method = f"lseg:{cfg.head or 'head'}" if self.head is not None else self.variant

    def relabel(self, labels: Sequence[str]) -> SegmentPredictor:
        """The same predictor (model, head, options, background) for other labels; text embedded once."""
        other = copy.copy(self)
        other.labels = list(labels)
        other.background = [b for b in self.background if b not in other.labels]
        other.text = text_embeddings(self.model, [*other.labels, *other.background], self.templates)
        return other

    def logits(self, image, *, full_size: bool = True) -> torch.Tensor:
        """``[N + B, H, W]`` float32 logits (labels, then background prompts) at the image's size, or at the
        working resolution with ``full_size=False``."""
        return self.logits_batch([image], full_size=full_size)[0]

    def logits_batch(self, images: list, *, full_size: bool = True) -> list[torch.Tensor]:
        """:meth:`logits` of several images: their windows share the backbone's batches."""
        from clipkit import lseg

        cfg = self.config
        if self.head is not None:
            return lseg.lseg_logits_batch(self.model, self.head, images, self.text, stride=cfg.stride,
                                          short_side=cfg.short_side, full_size=full_size)
        return dense.dense_logits_batch(self.model, images, self.text, variant=self.variant, stride=cfg.stride,
                                        scale=cfg.scale, short_side=cfg.short_side, shifts=cfg.shifts,
                                        full_size=full_size)

    @torch.inference_mode()
    def pixel_labels(self, image, *, keep_probs: bool = False,
                     logits: torch.Tensor | None = None) -> PixelLabels:
        """The decision at the image's size from the working-resolution logits (``logits``: already computed),
        memory O(H·W), the ``[N, H, W]`` volume only with ``keep_probs`` (:mod:`clipkit.pixelwise`)."""
        logits = self.logits(image, full_size=False) if logits is None else logits
        return label_pixels(logits.cpu(), (image.size[1], image.size[0]), len(self.labels),
                            threshold=self.config.threshold, min_cosine=self.min_cosine,
                            cos_scale=self._cos_scale, keep_probs=keep_probs)

    def segment_image(self, image, *, keep_probs: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``(label_map [H, W] uint8|uint16, probabilities [N, H, W] float32 or None)`` for one RGB PIL
        image."""
        out = self.pixel_labels(image, keep_probs=keep_probs)
        probs = None if out.probs is None else out.probs.numpy()
        return self._narrow(out.label_map), probs

    def _narrow(self, label_map: torch.Tensor) -> np.ndarray:
        return label_map.numpy().astype(np.uint8 if len(self.labels) < 256 else np.uint16)

    @torch.inference_mode()
    def predict(self, samples: list[Sample]) -> list[Segmentation]:
        out = []
        for group in self._groups(samples):  # images whose windows share the backbone's batches
            images = [sample.image for sample in group]
            for sample, logits in zip(group, self.logits_batch(images, full_size=False), strict=True):
                px = self.pixel_labels(sample.image, keep_probs=self.config.scores, logits=logits)
                probs = None if px.probs is None else px.probs.numpy()
                out.append(Segmentation(sample.key, list(self.labels), self._narrow(px.label_map), probs,
                                        mean_scores=px.mean_scores))
        return out

    def _groups(self, samples: list[Sample]) -> list[list[Sample]]:
        """Consecutive samples whose working-resolution logits together stay under :data:`BATCH_FLOATS` (many
        labels on a large model: one image at a time)."""
        from clipkit.dense import model_window

        side = self.config.short_side or min(model_window(self.model))
        groups: list[list[Sample]] = []
        used = BATCH_FLOATS
        for sample in samples:
            w, h = sample.image.size
            floats = len(self.text) * side * side * max(w, h) / max(1, min(w, h))
            if used + floats > BATCH_FLOATS:
                groups.append([])
                used = 0
            groups[-1].append(sample)
            used += floats
        return groups
