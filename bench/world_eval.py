"""Model-card metrics of a shapes-world CLIP folder (default: the bundled shapes-clip).

    PYTHONPATH=$PWD python bench/world_eval.py [FOLDER] [--update-card] [--threads 2]

Prints the metrics as JSON (zero-shot top-1 / colour / shape accuracy on single-object scenes, caption
retrieval R@1 on 2-object scenes, dense patch–text accuracy for plain patches and clipkit.dense's variants).
``--update-card`` rewrites the folder's README.md metrics table and train_log.json.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from clipkit.training.clip_card import refresh_card
from clipkit.world import metrics
from clipkit.world.model import SHAPES_CLIP_DIR, load_shapes_clip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(SHAPES_CLIP_DIR))
    ap.add_argument("--update-card", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-zero-shot", type=int, default=480)
    ap.add_argument("--n-pairs", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import open_clip  # noqa: F401  (import time is not load time)

    t0 = time.perf_counter()
    model, preprocess, tokenizer = load_shapes_clip(a.folder)
    load_s = time.perf_counter() - t0
    res = metrics.evaluate(model, tokenizer, preprocess, n_zero_shot=a.n_zero_shot, n_pairs=a.n_pairs)
    res["partial_names"] = metrics.partial_names(model, tokenizer, preprocess)
    res["load_seconds"] = round(load_s, 3)
    res["eval_seconds"] = round(time.perf_counter() - t0 - load_s, 1)
    print(json.dumps(res, indent=1))
    if a.update_card:
        refresh_card(a.folder, {k: res[k] for k in ("zero_shot", "retrieval", "dense")})


if __name__ == "__main__":
    main()
