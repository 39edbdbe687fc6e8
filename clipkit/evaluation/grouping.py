"""``clipkit eval group``: mIoU and group purity of ``clipkit group`` on a shapes-world export.

mIoU is the dataset-level confusion-matrix mIoU of ``clipkit eval segment`` (background counts as a class;
:mod:`clipkit.evaluation.segmentation`). Purity of a stage = for each group, the share of its pixels belonging to
its most common ground-truth class (background included), pixel-weighted over all groups and images: 1.0 means
no group straddles two objects (or an object and the background).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.evaluation.segmentation import confusion_matrix, labelled_export, miou_from_confusion
from clipkit.groupvit.segment import purity


def evaluate_group(
    data: str | Path,
    model: Any,
    config: Any = None,
    *,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    quiet: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate ``clipkit group`` on an export folder (``clipkit world export``).

    model: a ``GroupViTModel`` or ``LoadedModel`` (``clipkit.registry.load(..., kind="group")``); labels
    default to all category names of the export; ``config`` (:class:`clipkit.configs.GroupConfig`) and
    ``options`` (its fields) configure the predictor.
    Returns ``{"miou", "per_class", "pixel_accuracy", "purity": {"stage1", "stage2"}, "n_images",
    "ms_per_image", "method", "model", "bg_thresh"}``.
    """
    from clipkit.methods.group import GroupPredictor
    from clipkit.runner import progress
    from clipkit.world.dataset import load_dataset_image

    export, label_list, lut, images = labelled_export(data, labels, limit)
    grouper = GroupPredictor(model, label_list, config, **options)
    n = len(label_list) + 1
    conf = np.zeros((n, n), dtype=np.int64)
    pure = {"stage1": [0.0, 0.0], "stage2": [0.0, 0.0]}
    seconds = 0.0
    method = ""
    with progress(len(images), "eval group", quiet) as bar:
        for path in images:
            image = load_dataset_image(path)
            raw = np.asarray(export.semantic_mask(path)).astype(np.int64)
            gt = lut[raw]
            start = time.perf_counter()
            result = grouper.group_image(image, str(path))
            seconds += time.perf_counter() - start
            method = result.extras.get("method", "")
            conf += confusion_matrix(result.label_map, gt, n)
            for key in pure:
                if key in result.extras:
                    p, count = purity(result.extras[key], raw)
                    pure[key][0] += p * count
                    pure[key][1] += count
            bar.advance()
    out = miou_from_confusion(conf, ["background", *label_list])
    out.update({
        "purity": {k: round(v[0] / v[1], 4) for k, v in pure.items() if v[1]},
        "n_images": len(images),
        "ms_per_image": round(1000 * seconds / len(images), 1),
        "method": method,
        "model": getattr(model, "name", ""),
        "bg_thresh": grouper.bg_thresh,
    })
    return out
