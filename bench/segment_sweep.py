"""How the background defaults were chosen: mIoU per variant × background rule on held-out scenes.

    python bench/segment_sweep.py [--model shapes-clip] [--n 40] [--seed 9100] [--threads 2]

For each variant the logits over the 48 categories + a "background" prompt are computed once per scene; the
background rules are then applied to the same logits: (a) the "background" prompt competes as a class;
(b) no background prompt, pixels whose top probability is below T are background; (c) both; (d) no
background prompt, pixels whose best label *cosine* is below c are background (``min_cosine``). Scenes: stream
``--seed`` (disjoint from the bench and training streams) at the model's input size, 1–4 objects.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
COSINES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)  # min_cosine rule: best label cosine below it = background


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="shapes-clip")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="plain,maskclip,sclip,clearclip,naclip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clipkit import dense
    from clipkit.evaluation.segmentation import confusion_matrix, miou_from_confusion
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_model
    from clipkit.world.scenes import CATEGORIES, SceneConfig, generate_scene

    model = load_model(args.model, device="cpu")
    h, w = model.image_size
    scenes = [generate_scene(args.seed, i, SceneConfig(size=(w, h))) for i in range(args.n)]
    text = text_embeddings(model, [*CATEGORIES, "background"])
    n = len(CATEGORIES)
    rules = (["prompt"] + [f"thr {t}" for t in THRESHOLDS] + [f"prompt+thr {t}" for t in THRESHOLDS]
             + [f"cos {c}" for c in COSINES])
    print("| variant | " + " | ".join(rules) + " |\n|---|" + "---:|" * len(rules))
    for variant in args.variants.split(","):
        conf = {r: np.zeros((n + 1, n + 1), np.int64) for r in rules}
        for scene in scenes:
            gt = scene.label_map()
            logits = dense.dense_logits(model, scene.image, text, variant=variant)
            with_bg = logits.softmax(0)
            best, idx = with_bg.max(0)
            pred_prompt = torch.where(idx >= n, 0, idx + 1)
            conf["prompt"] += confusion_matrix(pred_prompt.numpy(), gt, n + 1)
            cos_best, cos_idx = (logits[:n] / dense.logit_scale_for(model, variant)).max(0)
            for c in COSINES:
                pred = torch.where(cos_best < c, 0, cos_idx + 1)
                conf[f"cos {c}"] += confusion_matrix(pred.numpy(), gt, n + 1)
            no_bg = logits[:n].softmax(0)
            best_nb, idx_nb = no_bg.max(0)
            for t in THRESHOLDS:
                pred = torch.where(best_nb < t, 0, idx_nb + 1)
                conf[f"thr {t}"] += confusion_matrix(pred.numpy(), gt, n + 1)
                pred = torch.where(best < t, 0, pred_prompt)
                conf[f"prompt+thr {t}"] += confusion_matrix(pred.numpy(), gt, n + 1)
        cells = [f"{miou_from_confusion(conf[r])['miou']:.3f}" for r in rules]
        print(f"| {variant} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
