"""Semantic-segmentation metrics (mIoU from a confusion matrix) and the ``clipkit eval segment`` evaluator.

IoU per class = TP / (TP + FP + FN) accumulated over the whole dataset (the mmseg / VOC convention, not a mean
of per-image IoUs); classes that never occur in prediction or ground truth are left out of the mean.
Class 0 is background and counts as a class, as in PASCAL VOC.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.errors import UsageError

IGNORE_INDEX = 255


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, n_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``[n_classes, n_classes]`` int64 counts, rows = ground truth, columns = prediction.

    ``pred``, ``gt``: integer maps of the same shape with values in ``[0, n_classes)``; ground-truth pixels
    equal to ``ignore_index`` are skipped.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    gt = np.asarray(gt).astype(np.int64).ravel()
    if pred.shape != gt.shape:
        raise UsageError(f"prediction and ground truth differ in size ({pred.size} vs {gt.size} pixels)")
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    if gt.size and (gt.min() < 0 or gt.max() >= n_classes or pred.min() < 0 or pred.max() >= n_classes):
        raise UsageError(f"label values must lie in [0, {n_classes})")
    return np.bincount(gt * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def miou_from_confusion(conf: np.ndarray, names: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"miou", "per_class": {name: iou}, "pixel_accuracy"}`` from an accumulated confusion matrix."""
    n = conf.shape[0]
    names = list(names) if names is not None else [str(i) for i in range(n)]
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    per_class = {names[i]: round(float(iou[i]), 4) for i in range(n) if present[i]}
    total = conf.sum()
    return {
        "miou": round(float(np.nanmean(iou)) if present.any() else 0.0, 4),
        "per_class": per_class,
        "pixel_accuracy": round(float(tp.sum() / total) if total else 0.0, 4),
    }


def confusion_miou(
    pred_maps: Iterable[np.ndarray],
    gt_maps: Iterable[np.ndarray],
    n_classes: int,
    names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """Dataset mIoU of paired label maps (each ``[H, W]`` int, values in ``[0, n_classes)``).

    Returns ``{"miou": float, "per_class": {name: iou}, "pixel_accuracy": float}``; ``names`` (length
    ``n_classes``, index 0 = background) default to the class indices as strings.
    """
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    for pred, gt in zip(pred_maps, gt_maps, strict=True):
        conf += confusion_matrix(pred, gt, n_classes, ignore_index)
    return miou_from_confusion(conf, names)


def _label_lookup(categories: dict[int, str], labels: Sequence[str]) -> np.ndarray:
    """Category id → label index (1-based; 0 background; IGNORE_INDEX for categories outside ``labels``)."""
    size = max([0, *categories]) + 1
    lut = np.full(max(size, 256), IGNORE_INDEX, dtype=np.int64)
    lut[0] = 0
    index = {name: k for k, name in enumerate(labels, start=1)}
    for cid, name in categories.items():
        lut[cid] = index.get(name, IGNORE_INDEX)
    return lut


def labelled_export(data: str | Path, labels: Sequence[str] | None, limit: int | None
                    ) -> tuple[Any, list[str], np.ndarray, list[Path]]:
    """``(export, labels, lut, images)`` of an export folder: ``labels`` default to every category name; ``lut``
    maps a category id to its 1-based label index (0 background, ``IGNORE_INDEX`` outside ``labels``);
    ``images`` are the first ``limit``. Unreadable exports, unknown labels and no images are UsageErrors."""
    from clipkit.world.dataset import ExportError, read_export

    try:
        export = read_export(data)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    categories = {int(k): str(v) for k, v in dict(export.categories).items()}
    label_list = list(labels) if labels else [categories[k] for k in sorted(categories)]
    unknown = [lb for lb in label_list if lb not in categories.values()]
    if unknown:
        raise UsageError(f"labels not in the dataset's categories: {', '.join(unknown)}")
    images = list(export.images)[: limit if limit else None]
    if not images:
        raise UsageError(f"no images in {data}")
    return export, label_list, _label_lookup(categories, label_list), images


def evaluate_segment(
    data: str | Path,
    model: Any,
    config: Any = None,
    *,
    labels: Sequence[str] | None = None,
    labels_per_image: bool = False,
    limit: int | None = None,
    quiet: bool = True,
    **segment_options: Any,
) -> dict[str, Any]:
    """mIoU of ``clipkit segment`` on an export of the shapes world (``clipkit world export``).

    Args:
        data: export folder, read with ``clipkit.world.dataset.read_export``.
        model: ``LoadedModel``.
        labels: labels to segment with; default all category names of the export (``--labels-from-data``).
            Ground-truth pixels of categories outside ``labels`` are ignored.
        labels_per_image: segment each image with only the categories present in its ground truth (the
            user knows what to look for); IoUs are still accumulated over the dataset's label set.
        limit: evaluate the first ``limit`` images only.
        config: a :class:`clipkit.configs.SegmentConfig`; ``segment_options`` override its fields.
    Returns:
        ``{"miou", "per_class", "pixel_accuracy", "n_images", "ms_per_image", "method", "model"}``; per-class
        IoUs include ``background``.
    """
    from clipkit.methods.segment import SegmentPredictor
    from clipkit.runner import progress
    from clipkit.world.dataset import load_dataset_image

    export, label_list, lut, images = labelled_export(data, labels, limit)
    segmenter = SegmentPredictor(model, label_list, config, **segment_options)
    n = len(label_list) + 1
    conf = np.zeros((n, n), dtype=np.int64)
    seconds = 0.0
    with progress(len(images), "eval segment", quiet) as bar:
        for path in images:
            image = load_dataset_image(path)
            gt = lut[np.asarray(export.semantic_mask(path)).astype(np.int64)]
            start = time.perf_counter()
            if labels_per_image:
                present = [k for k in range(1, n) if (gt == k).any()]
                if present:
                    own = segmenter.relabel([label_list[k - 1] for k in present])
                    sub_map, _ = own.segment_image(image, keep_probs=False)
                    label_map = np.array([0, *present], dtype=np.int64)[sub_map]
                else:
                    label_map = np.zeros_like(gt)
            else:
                label_map, _ = segmenter.segment_image(image, keep_probs=False)
            seconds += time.perf_counter() - start
            conf += confusion_matrix(label_map, gt, n)
            bar.advance()
    result = miou_from_confusion(conf, ["background", *label_list])
    result.update({
        "n_images": len(images),
        "ms_per_image": round(1000 * seconds / len(images), 1),
        "method": segmenter.method + (" (labels per image)" if labels_per_image else ""),
        "model": getattr(model, "name", ""),
    })
    return result
