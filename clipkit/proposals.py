"""Class-agnostic, training-free region proposals (shared by ``detect`` and ``ground``).

ViLD (tensorflow/tpu ``models/official/detection/projects/vild``) classifies the boxes of a class-agnostic RPN
(1000 proposals after NMS 0.7). We have no trained RPN for an arbitrary CLIP, so the proposals come from two
training-free sources, merged and de-duplicated the same way:

1. **Selective search** (Uijlings et al. 2013) from opencv-contrib (``cv2.ximgproc.segmentation``), fast mode:
   hierarchical grouping of a graph-based over-segmentation; class-agnostic and label-free.
2. **Score-map components**: given per-label dense score maps (e.g. from :func:`clipkit.dense.dense_logits`
   after a softmax), each label's pixels where it is the arg-max and its score passes a threshold are split
   into 8-connected components; each component's bounding box, grown by a fraction of a patch (the maps'
   edges fall short of the objects'), is a proposal. With ``model`` and ``text_emb``/``labels`` but no
   ``score_maps`` the maps are computed here through :mod:`clipkit.dense`. ``detect`` and ``ground`` pass their
   own maps and use these boxes alone by default (selective search only on request).

Both are merged, filtered (min side, min area, max area fraction, max aspect ratio), NMS'd at ``nms_iou``
(ViLD's RPN NMS 0.7) in priority order (score-map boxes by mean score first, then selective search in its own
order), and capped at ``max_proposals``.

Deviation from ViLD: no learned objectness, so there is no RPN score; the priority order above stands in
for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "ProposalConfig",
    "boxes_from_label_map",
    "boxes_from_score_maps",
    "filter_boxes",
    "grow_boxes",
    "propose",
    "score_maps_from_patches",
    "selective_search",
]


@dataclass(frozen=True)
class ProposalConfig:
    """Every proposal default lives here; ``propose(**cfg)`` overrides fields by name.

    Sizes are in pixels of the original image; ``max_area_frac`` is relative to the image area.
    """

    use_selective_search: bool = True  # selective search boxes
    ss_mode: str = "fast"  # "fast" | "quality" (OpenCV's two strategy presets)
    ss_max_side: int = 384  # the image is downscaled to this longer side before selective search (speed)
    ss_top_k: int = 1000  # keep at most this many raw selective-search boxes (in OpenCV's order)
    use_score_maps: bool = True  # score-map component boxes, when maps (or model + labels) are given
    score_threshold: float = 0.3  # a pixel joins its arg-max label's mask when its score is at least this
    score_map_dilate: int = 0  # optional dilation (px) of each label mask before connected components
    # grow each score-map box by this fraction of a patch (in image px, ``patch_px`` of propose) on every side:
    # the cosine cut leaves a component short of the object's edge, whose patches mix object and background
    score_map_grow: float = 0.15
    min_side: float = 4.0  # drop boxes narrower or lower than this
    min_area: float = 64.0  # drop boxes smaller than this (px²); ViLD's demo uses 220 px² on ~640 px images
    max_area_frac: float = 0.9  # drop boxes covering more than this fraction of the image (background)
    max_aspect: float = 8.0  # drop boxes with max(w/h, h/w) above this
    nms_iou: float = 0.7  # ViLD RPN NMS threshold
    max_proposals: int = 300  # cap after NMS (ViLD keeps 1000 RPN boxes; 300 is ample here)


def _to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image HxWx3, got shape {arr.shape}")
    return arr.astype(np.uint8, copy=False)


def _seed_c_rand() -> None:
    """Seed the C library's ``rand()``: OpenCV's selective search ranks the hierarchy's regions by level × a
    random number (as the paper does) drawn from ``rand()``, whose state carries over between calls, so without
    this the same image gives other boxes on every call (seen: IoU 0.78–0.92 for one object). Best effort: where
    no C library can be loaded, the boxes stay random."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        name = ctypes.util.find_library("c") or ctypes.util.find_library("msvcrt")
        (ctypes.CDLL(name) if name else ctypes.CDLL(None)).srand(0)


def selective_search(image: Image.Image | np.ndarray, *, mode: str = "fast", max_side: int = 384,
                     top_k: int = 1000) -> np.ndarray:
    """Selective-search boxes, ``[K, 4]`` float32 XYXY in pixels of ``image`` (xmax/ymax exclusive).

    The image is downscaled so its longer side is at most ``max_side`` (selective search cost grows with the
    pixel count) and the boxes are scaled back. Boxes keep OpenCV's output order.
    """
    import cv2

    if mode not in ("fast", "quality"):
        raise ValueError(f"selective search mode must be 'fast' or 'quality', got {mode!r}")
    rgb = _to_rgb_array(image)
    h, w = rgb.shape[:2]
    scale = min(1.0, float(max_side) / max(h, w))
    small = rgb if scale >= 1.0 else cv2.resize(
        rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    cv2.setNumThreads(1)  # the machine is shared; OpenCV's own threads do not help on tiny images
    _seed_c_rand()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    rects = ss.process()  # [K, 4] int (x, y, w, h)
    if rects is None or len(rects) == 0:
        return np.zeros((0, 4), np.float32)
    rects = np.asarray(rects[:top_k], np.float32)
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], 1)
    boxes /= scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    return boxes.astype(np.float32)


def boxes_from_score_maps(score_maps: Any, *, threshold: float = 0.3, dilate: int = 0, min_area: float = 0.0,
                          n_labels: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected-component boxes of per-label score maps.

    ``score_maps``: ``[N, H, W]`` scores (probabilities, e.g. a softmax over labels) at the original image
    size, numpy or torch. For each label k, mask_k = (argmax == k) & (score_k >= threshold); each 8-connected
    component of mask_k gives one box. ``n_labels``: only the first ``n_labels`` channels are labels; the rest
    are background channels that win pixels in the arg-max but give no boxes (ClearCLIP-style background).

    Returns ``(boxes [K,4] float32 XYXY px, scores [K] float32 mean score inside the component,
    labels [K] int64)``.
    """
    if hasattr(score_maps, "detach"):  # torch tensor
        score_maps = score_maps.detach().float().cpu().numpy()
    maps = np.asarray(score_maps)
    if maps.ndim != 3:
        raise ValueError(f"score_maps must be [N, H, W], got shape {maps.shape}")
    maps = maps.astype(np.float32, copy=False)
    labels = maps.shape[0] if n_labels is None else min(n_labels, maps.shape[0])
    arg = maps.argmax(0)
    label_map = np.where((maps.max(0) >= threshold) & (arg < labels), arg + 1, 0)
    out = [(box, float(maps[k][comp == c].mean()), k)
           for k, box, comp, c in _components(label_map, labels, dilate, min_area)]
    if not out:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return (np.asarray([o[0] for o in out], np.float32), np.asarray([o[1] for o in out], np.float32),
            np.asarray([o[2] for o in out], np.int64))


def boxes_from_label_map(label_map: Any, n_labels: int, *, dilate: int = 0,
                         min_area: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of :func:`boxes_from_score_maps` from a decided label map (``[H, W]`` integers, 0 = no label,
    k = label k - 1, e.g. :func:`clipkit.pixelwise.label_pixels` with the same threshold): ``(boxes [K, 4]
    float32 XYXY px, labels [K] int64)``, in the same order, without the per-label score volume."""
    out = [(box, k) for k, box, _, _ in _components(np.asarray(label_map), n_labels, dilate, min_area)]
    if not out:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return np.asarray([o[0] for o in out], np.float32), np.asarray([o[1] for o in out], np.int64)


def _components(label_map: np.ndarray, n_labels: int, dilate: int,
                min_area: float) -> Iterator[tuple[int, tuple[int, int, int, int], np.ndarray, int]]:
    """``(label k, XYXY box, component map, component id)`` of each 8-connected component of each label's pixels
    (``label_map == k + 1``, dilated by ``dilate`` px), labels in order, components in OpenCV's order."""
    import cv2

    kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8) if dilate > 0 else None
    present = np.flatnonzero(np.bincount(label_map.ravel().astype(np.int64), minlength=n_labels + 1)[1:n_labels + 1])
    for k in present:
        mask = (label_map == k + 1).astype(np.uint8)
        if kernel is not None:
            mask = cv2.dilate(mask, kernel)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for c in range(1, n):  # component 0 is the unmasked rest
            x, y, bw, bh, area = stats[c]
            if area >= min_area:
                yield int(k), (int(x), int(y), int(x + bw), int(y + bh)), comp, c


def grow_boxes(boxes: np.ndarray, pixels: float, image_size: tuple[int, int]) -> np.ndarray:
    """``boxes`` ``[K,4]`` XYXY px grown by ``pixels`` on every side, clipped to ``image_size = (W, H)``."""
    out = np.asarray(boxes, np.float32).copy()
    out[:, :2] -= pixels
    out[:, 2:] += pixels
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, image_size[0])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, image_size[1])
    return out


def filter_boxes(boxes: np.ndarray, image_size: tuple[int, int], cfg: ProposalConfig) -> np.ndarray:
    """Boolean keep-mask ``[K]`` for ``boxes`` ``[K,4]`` XYXY px; ``image_size`` is ``(W, H)``."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    area = w * h
    aspect = np.maximum(w / np.maximum(h, 1e-6), h / np.maximum(w, 1e-6))
    img_area = float(image_size[0] * image_size[1])
    return ((w >= cfg.min_side) & (h >= cfg.min_side) & (area >= cfg.min_area)
            & (area <= cfg.max_area_frac * img_area) & (aspect <= cfg.max_aspect))


def _nms(boxes: np.ndarray, priority: np.ndarray, iou: float) -> np.ndarray:
    import torch
    from torchvision.ops import nms

    keep = nms(torch.from_numpy(boxes), torch.from_numpy(priority), iou)
    return keep.numpy()


def _make_config(cfg: dict[str, Any]) -> ProposalConfig:
    names = {f.name for f in fields(ProposalConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"unknown proposal option(s): {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(names))}")
    return replace(ProposalConfig(), **cfg)


def propose(image: Image.Image | np.ndarray, *, model: Any = None, score_maps: Any = None,
            text_emb: Any = None, labels: Sequence[str] | None = None, n_labels: int | None = None,
            patch_px: float | None = None, **cfg: Any) -> np.ndarray:
    """Class-agnostic proposals for one image: ``[K, 4]`` float32 XYXY in pixels of the original image.

    ``score_maps``: optional ``[N, H, W]`` per-label scores (probabilities) at the image size. Without them,
    but with ``model`` (a ``LoadedModel``) and ``text_emb`` ``[N, D]`` or ``labels``, the maps are computed
    with :func:`clipkit.dense.dense_logits` + softmax over labels. ``cfg`` overrides any
    :class:`ProposalConfig` field (unknown names raise ``ValueError``). ``n_labels``: channels past the first
    ``n_labels`` of ``score_maps`` are background (they win pixels but give no boxes). ``patch_px``: the size
    of one patch of the maps' source grid in image pixels; score-map boxes grow by ``score_map_grow`` of it
    (none when absent). The result can be empty ``[0, 4]``.
    """
    conf = _make_config(cfg)
    rgb = _to_rgb_array(image)
    size = (rgb.shape[1], rgb.shape[0])
    parts: list[np.ndarray] = []
    prios: list[np.ndarray] = []
    if conf.use_score_maps and score_maps is None and model is not None and (text_emb is not None or labels):
        score_maps = dense_score_maps(model, Image.fromarray(rgb), text_emb=text_emb, labels=labels)
        if patch_px is None:  # dense_logits resizes the short side to the model's window
            from clipkit import dense

            patch_px = max(dense.patch_grid(model)) * min(size) / min(dense.model_window(model))
    if conf.use_score_maps and score_maps is not None:
        if tuple(score_maps.shape[-2:]) != (size[1], size[0]):
            raise ValueError(f"score_maps are {tuple(score_maps.shape[-2:])} (H, W) but the image is "
                             f"{size[1]}x{size[0]}; resize the maps to the image first")
        b, s, _ = boxes_from_score_maps(score_maps, threshold=conf.score_threshold,
                                        dilate=conf.score_map_dilate, n_labels=n_labels)
        if patch_px and conf.score_map_grow:
            b = grow_boxes(b, conf.score_map_grow * patch_px, size)
        parts.append(b)
        prios.append(1.0 + s)  # score-map boxes outrank every selective-search box
    if conf.use_selective_search:
        b = selective_search(rgb, mode=conf.ss_mode, max_side=conf.ss_max_side, top_k=conf.ss_top_k)
        parts.append(b)
        # OpenCV returns boxes in its ranking order; keep that order as a priority in (0, 1]
        prios.append(np.linspace(1.0, 0.0, num=len(b), endpoint=False, dtype=np.float32))
    if not parts:
        return np.zeros((0, 4), np.float32)
    boxes = np.concatenate(parts).astype(np.float32)
    prio = np.concatenate(prios).astype(np.float32)
    keep = filter_boxes(boxes, size, conf)
    boxes, prio = boxes[keep], prio[keep]
    if boxes.shape[0] == 0:
        return boxes.reshape(0, 4)
    keep_idx = _nms(boxes, prio, conf.nms_iou)[: conf.max_proposals]
    return np.ascontiguousarray(boxes[keep_idx], dtype=np.float32)


def score_maps_from_patches(model: Any, patches: Any, label_emb: Any, variant: str,
                            size: tuple[int, int], *, n_labels: int | None = None,
                            min_cosine: float | None = None) -> Any:
    """Per-label probability maps ``[N, H, W]`` (torch float32) at ``size = (W, H)`` from dense patches
    ``[1, h, w, D]`` and label embeddings ``[N, D]`` (torch): softmax over labels of the variant's official logit
    scale × cosine, bilinearly upsampled.

    ``min_cosine``: every probability is set to 0 where the best cosine of the first ``n_labels`` (default: all)
    rows of ``label_emb`` is below it — the background rule of ``segment`` — so those pixels give no box.
    """
    import torch
    import torch.nn.functional as F

    from clipkit.dense import logit_scale_for

    cos = torch.einsum("hwd,nd->nhw", patches[0].float(), F.normalize(label_emb.float(), dim=-1))
    cos = F.interpolate(cos[None], size=(size[1], size[0]), mode="bilinear", align_corners=False)[0]
    probs = (logit_scale_for(model, variant) * cos).softmax(0)
    if min_cosine is not None:
        probs = probs * (cos[:n_labels].amax(0) >= min_cosine)[None]
    return probs


def dense_score_maps(model: Any, image: Image.Image, *, text_emb: Any = None,
                     labels: Sequence[str] | None = None) -> Any:
    """Per-label probability maps ``[N, H, W]`` float32 (torch) at the image size via :mod:`clipkit.dense`."""
    import torch

    from clipkit import dense

    if text_emb is None:
        from clipkit.prompts import text_embeddings

        text_emb = text_embeddings(model, list(labels or []))
    with torch.inference_mode():
        logits = dense.dense_logits(model, image, text_emb)  # [N, H, W], already scaled
        return logits.float().softmax(0)
