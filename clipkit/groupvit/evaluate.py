"""``clipkit eval group``: mIoU and group purity of ``clipkit group`` on a shapes-world export.

mIoU is the dataset-level confusion-matrix mIoU of ``clipkit eval segment`` (background counts as a class;
``clipkit.evaluation.segmentation``). Purity of a stage = for each group, the share of its pixels belonging to
its most common ground-truth class (background included), pixel-weighted over all groups and images: 1.0 means
no group straddles two objects (or an object and the background).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.errors import UsageError
from clipkit.groupvit.segment import purity


def _lookup(categories: dict[int, str], labels: Sequence[str]) -> np.ndarray:
    """Category id -> label index (1-based; 0 background; 255 = ignored: categories outside ``labels``)."""
    lut = np.full(max(256, max([0, *categories]) + 1), 255, dtype=np.int64)
    lut[0] = 0
    index = {name: k for k, name in enumerate(labels, start=1)}
    for cid, name in categories.items():
        lut[cid] = index.get(name, 255)
    return lut


def evaluate_group(
    data: str | Path,
    model: Any,
    *,
    labels: Sequence[str] | None = None,
    limit: int | None = None,
    quiet: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate ``clipkit group`` on an export folder (``clipkit world export``).

    model: a ``GroupViTModel`` or ``LoadedModel`` (``clipkit.methods.group.load_group_model``); labels default
    to all category names of the export; ``options`` go to ``clipkit.methods.group.Grouper``.
    Returns ``{"miou", "per_class", "pixel_accuracy", "purity": {"stage1", "stage2"}, "n_images",
    "ms_per_image", "method", "model", "bg_thresh"}``.
    """
    from clipkit.evaluation.segmentation import confusion_matrix, miou_from_confusion
    from clipkit.images import load_image
    from clipkit.methods.group import Grouper
    from clipkit.runner import progress
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
    lut = _lookup(categories, label_list)
    grouper = Grouper(model, label_list, **options)
    images = list(export.images)[: limit if limit else None]
    if not images:
        raise UsageError(f"no images in {data}")
    n = len(label_list) + 1
    conf = np.zeros((n, n), dtype=np.int64)
    pure = {"stage1": [0.0, 0.0], "stage2": [0.0, 0.0]}
    seconds = 0.0
    method = ""
    with progress(len(images), "eval group", quiet) as bar:
        for path in images:
            image = load_image(path)
            raw = np.asarray(export.semantic_mask(path)).astype(np.int64)
            gt = lut[raw]
            start = time.perf_counter()
            result = grouper(image, str(path))
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
                seg = label_groups(maps, groups, image, text, model.logit_scale_value, bg_thresh=None, topk=q)
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
