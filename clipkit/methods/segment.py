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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipkit import dense
from clipkit.errors import UsageError
from clipkit.images import Batch, as_pil, expand_inputs
from clipkit.prompts import parse_labels, text_embeddings
from clipkit.registry import LoadedModel, load_model
from clipkit.results import ErrorRecord, Result, Segmentation
from clipkit.runner import run_over_images

#: Background prompts used when none are given (the ClearCLIP/MaskCLIP convention of one "background" class).
DEFAULT_BACKGROUND: tuple[str, ...] = ("background",)


def _background_list(background: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    """``None`` → ``default``; ``""``, ``"none"`` or ``[]`` → no background prompts; ``"a,b"`` → two."""
    if background is None:
        return list(default)
    if isinstance(background, str):
        if background.strip().lower() in ("", "none"):
            return []
        return [b.strip() for b in background.split(",") if b.strip()]
    return [b for b in background if b and b.strip()]


class Segmenter:
    """Labels + options → ``predict(image) -> (label_map, probabilities)``; text embedded once.

    Args:
        model: ``LoadedModel`` with an open_clip ViT image tower.
        labels: class names; label ``k`` (1-based) in the label map is ``labels[k-1]``.
        variant: dense variant (``clipkit.dense.VARIANTS``), ignored with ``head``; default
            ``default_variant(model)``: ``plain`` for average-pooled towers, whose patch tokens are trained in
            the joint space (shapes-clip), NACLIP otherwise.
        head: LSeg head — bundled name, path, or an ``LSegHead``; ``None`` for training-free dense CLIP.
        background: background prompts (default ``DEFAULT_BACKGROUND``, or the head's own trained ones).
        threshold: pixels whose top probability is below this become background (default: none).
        min_cosine: pixels whose best label *cosine* (before the logit scale) is below this become background;
            training-free only. Default: the model's calibrated value for the variant
            (``clipkit.json`` → ``segment_min_cosine``), else none; ``-1`` turns it off. A deviation from the
            variants' papers (they use a background prompt or a softmax threshold): for a CLIP whose captions
            never name the background (shapes-clip) no background prompt wins, but background patches are
            less similar to every label.
        stride: sliding-window stride in pixels (default: half the model's input size).
        short_side: resize the short side to this before sliding (default: the model's input size).
        shifts: sub-patch shifted passes per axis for training-free features (``dense.patch_embeddings``):
            a finer grid at the same scale, ``shifts²`` forward passes per window (default 1).
        scale: logit scale for training-free variants (default: the variant's official one).
        templates: prompt templates (default: the model's own; the head's training templates with a head).
    """

    def __init__(
        self,
        model: LoadedModel,
        labels: Sequence[str],
        *,
        variant: str | None = None,
        head: Any = None,
        background: str | Sequence[str] | None = None,
        threshold: float | None = None,
        min_cosine: float | None = None,
        stride: int | None = None,
        short_side: int | None = None,
        shifts: int = 1,
        scale: float | None = None,
        templates: str | Sequence[str] | None = None,
    ):
        from clipkit import lseg

        variant = variant or dense.default_variant(model)
        if variant not in dense.VARIANTS:
            raise UsageError(f"unknown --variant {variant!r}; choose one of: {', '.join(dense.VARIANTS)}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UsageError("--threshold must be between 0 and 1")
        if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
            raise UsageError("--min-cosine must be between -1 and 1")
        if stride is not None and stride < 1:
            raise UsageError("--stride must be at least 1 pixel")
        if short_side is not None and short_side < 8:
            raise UsageError("--short-side must be at least 8 pixels")
        self.labels = list(labels)
        if not self.labels:
            raise UsageError("give at least one label (--labels)")
        if len(self.labels) > 65534:
            raise UsageError("at most 65534 labels")
        self.model = model
        self.head = None
        if head is not None:
            self.head = head if isinstance(head, lseg.LSegHead) else lseg.load_head(head, model)
            default_bg = self.head.cfg.background
            if templates is None and self.head.cfg.templates is not None:
                templates = self.head.cfg.templates
        else:
            dense._visual(model)  # fail early with a clear message on unsupported towers
            dense.check_shifts(model, shifts)
            default_bg = list(DEFAULT_BACKGROUND)
        self.background = [b for b in _background_list(background, default_bg) if b not in self.labels]
        self.variant, self.threshold, self.stride, self.short_side = variant, threshold, stride, short_side
        self.shifts = shifts
        self.min_cosine = None if self.head is not None else dense.min_cosine_for(model, variant, min_cosine)
        self.scale, self.templates = scale, templates
        # logits are scale · cos: the rule divides by the scale dense_logits used
        self._cos_scale = dense.logit_scale_for(model, variant) if scale is None else float(scale)
        self.text = text_embeddings(model, [*self.labels, *self.background], templates)
        self.method = f"lseg:{head if isinstance(head, str | Path) else 'head'}" if self.head else variant

    def relabel(self, labels: Sequence[str]) -> Segmenter:
        """The same segmenter (model, head, options, background) for other labels; text embedded once."""
        other = copy.copy(self)
        other.labels = list(labels)
        other.background = [b for b in self.background if b not in other.labels]
        other.text = text_embeddings(self.model, [*other.labels, *other.background], self.templates)
        return other

    def logits(self, image) -> torch.Tensor:
        """``[N + B, H, W]`` float32 logits (labels, then background prompts) at the image's size."""
        from clipkit import lseg

        image = as_pil(image)
        if self.head is not None:
            return lseg.lseg_logits(self.model, self.head, image, self.text, stride=self.stride,
                                    short_side=self.short_side)
        return dense.dense_logits(self.model, image, self.text, variant=self.variant, stride=self.stride,
                                  scale=self.scale, short_side=self.short_side, shifts=self.shifts)

    def predict(self, image) -> tuple[np.ndarray, np.ndarray]:
        """``(label_map [H, W] uint8|uint16, probabilities [N, H, W] float32)`` for one image."""
        logits = self.logits(image)
        probs = logits.softmax(dim=0)
        n = len(self.labels)
        best, index = probs.max(dim=0)
        label_map = index + 1
        label_map[index >= n] = 0  # a background prompt won
        if self.threshold is not None:
            label_map[best < self.threshold] = 0
        if self.min_cosine is not None:
            label_map[(logits[:n] / self._cos_scale).amax(dim=0) < self.min_cosine] = 0
        dtype = np.uint8 if n < 256 else np.uint16
        return label_map.cpu().numpy().astype(dtype), probs[:n].float().cpu().numpy()

    def __call__(self, image, path: str = "") -> Segmentation:
        label_map, probs = self.predict(image)
        return Segmentation(path, list(self.labels), label_map, probs)


def coco_rle(label_map: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """One COCO RLE (``{"size": [H, W], "counts": str}``) per label present in ``label_map``."""
    from pycocotools import mask as mask_utils

    out = []
    for k, label in enumerate(labels, start=1):
        mask = label_map == k
        if mask.any():
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            out.append({"label": label, "category_id": k,
                        "rle": {"size": [int(s) for s in rle["size"]],
                                "counts": rle["counts"].decode("ascii")}})
    return out


class _Artefacts:
    """Writes ``DIR/<stem>.png``, ``<stem>_overlay.png`` and optional ``<stem>.npz``; unique stems per run."""

    def __init__(self, out_dir: str | Path | None, *, overlay: bool = True, scores: bool = False):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.overlay, self.scores = overlay, scores
        self.used: set[str] = set()
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)

    def _stem(self, path: str) -> str:
        base = Path(path).stem or "image"
        stem, i = base, 1
        while stem in self.used:  # two inputs named a/x.png and b/x.png must not overwrite each other
            stem, i = f"{base}-{i}", i + 1
        self.used.add(stem)
        return stem

    def write(self, result: Segmentation, image) -> None:
        from clipkit.writers import save_label_png, save_overlay_png, save_scores_npz

        if self.out_dir is None:
            return
        stem = self._stem(result.path)
        mask = self.out_dir / f"{stem}.png"
        save_label_png(mask, result.label_map, len(result.labels))
        result.extras["mask"] = str(mask)
        if self.overlay:
            save_overlay_png(self.out_dir / f"{stem}_overlay.png", as_pil(image), result.label_map,
                             result.labels)
        if self.scores and result.scores is not None:
            save_scores_npz(self.out_dir / f"{stem}.npz", result.scores, result.labels)


def iter_segment(
    paths: Sequence[str],
    labels: Sequence[str],
    model: LoadedModel,
    *,
    out_dir: str | Path | None = None,
    overlay: bool = True,
    scores: bool = False,
    rle: bool = False,
    workers: int | None = None,
    quiet: bool = True,
    skip: set[str] | None = None,
    **options: Any,
) -> Iterator[Result]:
    """Segment image files in order, yielding a ``Segmentation`` or an ``ErrorRecord`` per input.

    ``options`` go to ``Segmenter`` (variant, head, background, threshold, stride, short_side, scale,
    templates). With ``out_dir`` the label PNG, overlay and (``scores``) ``.npz`` are written there; ``rle``
    adds COCO RLE masks to each result's JSON under ``"segmentation"``.
    """
    segmenter = Segmenter(model, labels, **options)
    artefacts = _Artefacts(out_dir, overlay=overlay, scores=scores)

    def process(batch: Batch) -> list[Result]:
        out: list[Result] = []
        for item in batch.ok:
            try:
                result = segmenter(item.image, item.path)
                artefacts.write(result, item.image)
            except (UsageError, OSError) as exc:
                out.append(ErrorRecord(item.path, str(exc)))
                continue
            if rle:
                result.extras["segmentation"] = coco_rle(result.label_map, result.labels)
            out.append(result)
        return out

    with torch.inference_mode():
        yield from run_over_images(paths, process, transform=None, batch_size=1, workers=workers,
                                   keep_image=True, quiet=quiet, skip=skip, description="segment")


def segment(
    images: Any,
    labels: str | Sequence[str],
    *,
    model: str | LoadedModel | None = None,
    pretrained: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    out_dir: str | Path | None = None,
    **options: Any,
) -> list[Result]:
    """Segment ``images`` into ``labels``; the Python face of ``clipkit segment``.

    ``images``: a path, folder or glob, a PIL image or HWC uint8 array, or a list of these. Returns one
    ``Segmentation`` (label map at the original size, 0 = background) or ``ErrorRecord`` per image, in order.
    ``options``: see ``Segmenter`` and ``iter_segment``.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device,
                                                                      precision=precision)
    label_list = parse_labels(labels)
    items = images if isinstance(images, list | tuple) else [images]
    if all(isinstance(i, str) or hasattr(i, "__fspath__") for i in items):
        return list(iter_segment(expand_inputs([str(i) for i in items]), label_list, loaded, out_dir=out_dir,
                                 **options))
    iter_keys = ("overlay", "scores", "rle", "workers", "quiet", "skip")
    art = {k: options.pop(k) for k in iter_keys if k in options}
    segmenter = Segmenter(loaded, label_list, **options)
    artefacts = _Artefacts(out_dir, overlay=art.get("overlay", True), scores=art.get("scores", False))
    results: list[Result] = []
    with torch.inference_mode():
        for index, item in enumerate(items):
            name = f"<image {index}>"
            try:
                image = as_pil(item)
                result = segmenter(image, name)
                artefacts.write(result, image)
            except Exception as exc:  # one bad in-memory image must not lose the others
                results.append(ErrorRecord(name, str(exc)))
                continue
            if art.get("rle"):
                result.extras["segmentation"] = coco_rle(result.label_map, result.labels)
            results.append(result)
    return results
