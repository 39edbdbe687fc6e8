"""Where does shapes-groupvit's zero-shot mIoU go? Grouping vs naming, on generated scenes (no training use).

For stream ``--seed`` (validation: 2), ``--n`` scenes at 224 px, all 48 labels:

- ``official``: mIoU of the official rule (top-5, background where best < min(t, max)), best t of a small sweep;
- ``oracle_grouping``: each final group takes its majority ground-truth class (background included): the mIoU
  upper bound of the grouping itself, whatever the naming;
- ``oracle_stage1``: the same for the stage-1 groups;
- ``oracle_top5``: the official rule, but the image's kept classes are its ground-truth classes (not top-5);
- ``group_naming_acc``: among final groups whose majority class is an object, the share whose best label over
  all 48 (group embedding vs text) is that class; ``image_recall5``: share of a scene's objects in the pooled
  embedding's top-5;
- ``entropy``: mean entropy (nats) of the soft assignment per token, per stage; ``groups_used`` per stage.

    PYTHONPATH=$PWD python bench/group_diagnose.py --model clipkit/assets/shapes-groupvit --seed 2 --n 100
    PYTHONPATH=$PWD python bench/group_diagnose.py --grid-ceiling 28 --seed 2 --n 100
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F


def _oracle(group_map: np.ndarray, gt: np.ndarray, k: int) -> np.ndarray:
    """Each group of ``group_map`` takes its majority ground-truth class."""
    pred = np.zeros_like(gt)
    for gi in np.unique(group_map):
        m = group_map == gi
        pred[m] = int(np.bincount(gt[m], minlength=k).argmax())
    return pred


def diagnose(model_dir: str, seed: int, n: int, size: int = 224, short_side: int | None = None) -> dict:
    """The figures of the module docstring for one GroupViT folder."""
    from clipkit.evaluation.segmentation import confusion_matrix, miou_from_confusion
    from clipkit.groupvit.segment import label_groups, preprocess, stage_maps
    from clipkit.groupvit.text import label_embeddings
    from clipkit.groupvit.weights import load_groupvit
    from clipkit.world import CATEGORIES, SceneConfig, generate

    model = load_groupvit(model_dir).float().eval()
    with open(f"{model_dir}/clipkit.json") as fh:
        templates = json.load(fh).get("templates") or ["a photo of a {}."]
    labels = list(CATEGORIES)
    text = label_embeddings(model, labels, templates)
    k = len(labels) + 1
    names = ["background", *labels]
    thresholds = (0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
    conf = {t: np.zeros((k, k), np.int64) for t in thresholds}
    conf_or = np.zeros((k, k), np.int64)
    conf_or1 = np.zeros((k, k), np.int64)
    conf_gt5 = {t: np.zeros((k, k), np.int64) for t in thresholds}
    named = [0, 0]
    recall = [0, 0]
    ent: list[list[float]] = [[], []]
    used: list[list[int]] = [[], []]
    with torch.inference_mode():
        for scene in generate(n, seed=seed, config=SceneConfig(size=(size, size))):
            gt = scene.label_map().astype(np.int64)
            image_x, group_x, out = model.encode_image_groups(preprocess(scene.image, model, short_side))
            maps = stage_maps(out, (size, size))
            gn, im = F.normalize(group_x[0], dim=-1), F.normalize(image_x[0], dim=-1)
            scale = model.logit_scale_value
            seg = label_groups(maps, gn, im, text, scale, bg_thresh=None, keep_scores=True)
            best = seg.scores.max(axis=0)
            gmax = float(seg.group_score.max())
            for t in thresholds:
                conf[t] += confusion_matrix(np.where(best < min(t, gmax), 0, seg.label_map.astype(np.int64)), gt, k)
            present = [c for c in np.unique(gt) if c > 0]
            # oracle grouping: majority class per final group
            g = seg.group_maps[-1]
            pred = _oracle(g, gt, k)
            for gi in np.unique(g):
                maj = int(pred[g == gi][0])
                if maj > 0:
                    named[1] += 1
                    named[0] += int(int((gn[gi] @ text.t()).argmax()) + 1 == maj)
            conf_or += confusion_matrix(pred, gt, k)
            conf_or1 += confusion_matrix(_oracle(seg.group_maps[0], gt, k), gt, k)
            # oracle top-5: keep the ground-truth classes
            aff = gn @ text.t() * scale
            pre = aff.softmax(-1)
            keep = torch.zeros(len(labels), dtype=torch.bool)
            keep[[c - 1 for c in present]] = True
            gaff = aff.masked_fill(~keep, float("-inf")).softmax(-1) * pre
            pix = gaff[torch.from_numpy(g).long()]
            pb, pl = pix.max(-1)
            for t in thresholds:
                lab = np.where(pb.numpy() < min(t, float(gaff.max())), 0, pl.numpy() + 1)
                conf_gt5[t] += confusion_matrix(lab, gt, k)
            top5 = set((im @ text.t()).topk(5).indices.tolist())
            recall[0] += sum(int(c - 1 in top5) for c in present)
            recall[1] += len(present)
            for i, soft in enumerate(out.soft):
                p = soft[0].clamp_min(1e-9)  # [G, N]
                ent[i].append(float((-(p * p.log()).sum(0)).mean()))
                used[i].append(len(np.unique(seg.group_maps[i])))
    off = {t: miou_from_confusion(conf[t], names)["miou"] for t in thresholds}
    gt5 = {t: miou_from_confusion(conf_gt5[t], names)["miou"] for t in thresholds}
    bt = max(off, key=off.get)
    bt5 = max(gt5, key=gt5.get)
    return {
        "model": model_dir, "seed": seed, "n": n, "short_side": short_side,
        "official": {"miou": off[bt], "bg_thresh": bt},
        "oracle_grouping": miou_from_confusion(conf_or, names)["miou"],
        "oracle_stage1": miou_from_confusion(conf_or1, names)["miou"],
        "oracle_top5": {"miou": gt5[bt5], "bg_thresh": bt5},
        "group_naming_acc": round(named[0] / max(named[1], 1), 4),
        "image_recall5": round(recall[0] / max(recall[1], 1), 4),
        "entropy": [round(float(np.mean(e)), 3) for e in ent],
        "groups_used": [round(float(np.mean(u)), 2) for u in used],
    }


def grid_ceiling(grid: int, seed: int, n: int, size: int = 224) -> float:
    """mIoU of a perfect grouping on a ``grid x grid`` patch grid: the ground truth average-pooled to the grid
    and upsampled bilinearly, argmax (what soft assignment maps of that resolution could at best express)."""
    from clipkit.evaluation.segmentation import confusion_matrix, miou_from_confusion
    from clipkit.world import CATEGORIES, SceneConfig, generate

    k = len(CATEGORIES) + 1
    conf = np.zeros((k, k), np.int64)
    for scene in generate(n, seed=seed, config=SceneConfig(size=(size, size))):
        gt = torch.from_numpy(scene.label_map().astype(np.int64))
        pooled = F.adaptive_avg_pool2d(F.one_hot(gt, k).permute(2, 0, 1).float()[None], grid)
        up = F.interpolate(pooled, size=(size, size), mode="bilinear", align_corners=False)[0]
        conf += confusion_matrix(up.argmax(0).numpy(), gt.numpy(), k)
    return miou_from_confusion(conf, ["background", *CATEGORIES])["miou"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="GroupViT folder (required unless --grid-ceiling)")
    ap.add_argument("--grid-ceiling", type=int, default=None, help="only print the ceiling of a GRID x GRID grid")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--short-side", type=int, default=None, help="inference size (default: training size)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.grid_ceiling:
        print(json.dumps({"grid": args.grid_ceiling, "seed": args.seed, "n": args.n,
                          "miou": grid_ceiling(args.grid_ceiling, args.seed, args.n)}))
        return
    if not args.model:
        ap.error("--model is required")
    print(json.dumps(diagnose(args.model, args.seed, args.n, short_side=args.short_side), indent=2))


if __name__ == "__main__":
    main()
