"""Milliseconds per image of ``clipkit group`` (model loaded once, label embeddings cached, 224 px scenes).

    PYTHONPATH=$PWD python bench/group_speed.py --model shapes-groupvit --n 30
    PYTHONPATH=$PWD python bench/group_speed.py --model shapes-clip --n 30      # training-free fallback
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    from clipkit.methods.group import GroupPredictor
    from clipkit.registry import load_groupvit_model
    from clipkit.world import CATEGORIES, SceneConfig, generate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-groupvit")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_groupvit_model(args.model, device="cpu")
    grouper = GroupPredictor(model, list(CATEGORIES))
    scenes = list(generate(args.n + 2, seed=0, config=SceneConfig(size=(224, 224))))
    for s in scenes[:2]:  # warm-up
        grouper.group_image(s.image)
    t0 = time.perf_counter()
    for s in scenes[2:]:
        grouper.group_image(s.image)
    ms = 1000 * (time.perf_counter() - t0) / args.n
    print(json.dumps({"model": args.model, "n": args.n, "threads": args.threads, "ms_per_image": round(ms, 1)}))


if __name__ == "__main__":
    main()
