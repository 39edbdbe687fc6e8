"""Zero-shot segmentation mIoU (at every background threshold) and group purity of a GroupViT on held-out
shapes-world scenes generated in memory (stream ``--seed``, 224 px as ``clipkit world export`` draws them).

Seed 1 is the training stream of shapes-groupvit, seed 2 its calibration stream, seed 0 (the export default) the
held-out test stream.

    PYTHONPATH=$PWD python bench/group_zero_shot.py --model clipkit/assets/shapes-groupvit --seed 0 --n 300
    PYTHONPATH=$PWD python bench/group_zero_shot.py --model DIR --seed 2 --n 100 --top-ks 5,8,12,48   # calibration
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    from clipkit.groupvit.weights import load_groupvit
    from clipkit.training.groupvit_sweep import DEFAULT_THRESHOLDS, sweep_world

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="GroupViT folder (Hugging Face layout + clipkit.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--thresholds", default=",".join(str(t) for t in DEFAULT_THRESHOLDS))
    ap.add_argument("--top-ks", default="5", help="image-level top-k values to sweep, e.g. 5,8,12,48")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_groupvit(args.model)
    try:
        with open(f"{args.model}/clipkit.json") as fh:
            templates = json.load(fh).get("templates") or ["a photo of a {}."]
    except OSError:
        templates = ["a photo of a {}."]
    thresholds = [float(x) for x in args.thresholds.split(",")]
    result = sweep_world(model, templates, seed=args.seed, n=args.n, size=args.size, thresholds=thresholds,
                         top_ks=[int(x) for x in args.top_ks.split(",")])
    result.pop("per_class_at_best")
    print(json.dumps({"model": args.model, **result}, indent=2))


if __name__ == "__main__":
    main()
