"""Calibration sweep of a GroupViT on generated shapes-world scenes (background threshold × image-level top-k).

Used to ship ``shapes-groupvit`` (its model card and ``clipkit.json`` calibration); the user-facing evaluation of
``clipkit group`` on an export is :mod:`clipkit.evaluation.grouping`. Purity as defined there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipkit.groupvit.segment import purity

DEFAULT_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
CALIBRATION_TOP_KS = (5, 8, 12, 48)  # the official 5, then wider image-level filters; 48 = all shapes classes


def sweep_world(
    model: Any,
    templates: Sequence[str],
    *,
    seed: int,
    n: int,
    size: int = 224,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    top_ks: Sequence[int] = (5,),
) -> dict[str, Any]:
    """mIoU at every (image-level top-k, background threshold) pair, and stage purity, of a ``GroupViT`` on
    generated scenes.

    Scenes ``0..n-1`` of stream ``seed`` at ``size`` px (as ``clipkit world export`` draws them); all 48 category
    names are the labels. The model runs once per image; the official rule is then applied for every top-k
    (classes outside the image's k best are masked) and threshold (background where the best score <
    min(thresh, best group score)). ``miou_by_bg_thresh`` and ``miou_no_background`` are those of the best
    top-k; ``miou_by_top_k[k][t]`` has them all.
    """
    import torch
    import torch.nn.functional as F

    from clipkit.evaluation.segmentation import confusion_matrix, miou_from_confusion
    from clipkit.groupvit.segment import label_groups, preprocess, stage_maps
    from clipkit.groupvit.text import label_embeddings
    from clipkit.world import CATEGORIES, SceneConfig, generate

    labels = list(CATEGORIES)
    text = label_embeddings(model, labels, templates)
    k = len(labels) + 1
    confs = {(q, t): np.zeros((k, k), np.int64) for q in top_ks for t in thresholds}
    conf_none = {q: np.zeros((k, k), np.int64) for q in top_ks}
    pure = {"stage1": [0.0, 0.0], "stage2": [0.0, 0.0]}
    used: dict[str, list[int]] = {"stage1": [], "stage2": []}
    t0 = time.time()
    with torch.inference_mode():
        for scene in generate(n, seed=seed, config=SceneConfig(size=(size, size))):
            gt = scene.label_map().astype(np.int64)
            image_x, group_x, out = model.encode_image_groups(preprocess(scene.image, model))
            maps = stage_maps(out, (size, size))
            groups, image = F.normalize(group_x[0], dim=-1), F.normalize(image_x[0], dim=-1)
            for q in top_ks:
                seg = label_groups(maps, groups, image, text, model.logit_scale_value, bg_thresh=None, topk=q,
                                   keep_scores=True)
                best = seg.scores.max(axis=0)
                arg = seg.label_map.astype(np.int64)
                gmax = float(seg.group_score.max())
                conf_none[q] += confusion_matrix(arg, gt, k)
                for t in thresholds:
                    confs[q, t] += confusion_matrix(np.where(best < min(t, gmax), 0, arg), gt, k)
            for i, key in enumerate(pure):
                p, c = purity(seg.group_maps[i], gt)
                pure[key][0] += p * c
                pure[key][1] += c
                used[key].append(len(np.unique(seg.group_maps[i])))
    names = ["background", *labels]
    by_pair = {pair: miou_from_confusion(conf, names) for pair, conf in confs.items()}
    best_k, best_t = max(by_pair, key=lambda pair: by_pair[pair]["miou"])
    return {
        "seed": seed, "n_images": n, "size": size,
        "miou_by_bg_thresh": {str(t): by_pair[best_k, t]["miou"] for t in thresholds},
        "miou_by_top_k": {str(q): {str(t): by_pair[q, t]["miou"] for t in thresholds} for q in top_ks},
        "miou_no_background": miou_from_confusion(conf_none[best_k], names)["miou"],
        "miou_no_background_by_top_k": {str(q): miou_from_confusion(conf_none[q], names)["miou"] for q in top_ks},
        "best_bg_thresh": best_t,
        "best_top_k": best_k,
        "purity": {key: round(v[0] / v[1], 4) for key, v in pure.items()},
        "groups_used": {key: round(float(np.mean(v)), 2) for key, v in used.items()},
        "per_class_at_best": by_pair[best_k, best_t]["per_class"],
        "seconds": round(time.time() - t0, 1),
    }


def miou_at(sweep: dict[str, Any], thresh: float, top_k: int | None = None) -> float:
    """The mIoU of a :func:`sweep_world` result at one of its thresholds (and top-k; default: its best)."""
    if top_k is None:
        return float(sweep["miou_by_bg_thresh"][str(thresh)])
    return float(sweep["miou_by_top_k"][str(top_k)][str(thresh)])
