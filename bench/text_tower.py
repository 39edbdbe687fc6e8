"""Text tower on the real tokens vs open_clip's padded 77 (issue 20 item 4): same embeddings, less work.

Interleaves the two paths over ``--rounds`` on the same prompts (labels × the OpenAI 80 templates) and reports
the median time of each, their ratio and the largest difference between the embeddings.

    python bench/text_tower.py --model ViT-B-32 --pretrained random --labels 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    from clipkit.prompts import template_sets
    from clipkit.registry import encode_tokens, load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="random")
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.pretrained, device="cpu")
    names = [f"object number {i}" for i in range(args.labels)]
    prompts = [t.format(n) for n in names for t in template_sets()["openai"]]
    tokens = loaded.tokenizer(prompts)
    times: dict[str, list[float]] = {"padded": [], "real tokens": []}
    with torch.inference_mode():
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            full = loaded.model.encode_text(tokens)
            times["padded"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            cut = encode_tokens(loaded.model, tokens)
            times["real tokens"].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"model": args.model, "prompts": len(prompts), "threads": args.threads, "rounds": args.rounds,
                      "median_s": {k: round(v, 3) for k, v in med.items()},
                      "range_s": {k: [round(min(v), 3), round(max(v), 3)] for k, v in times.items()},
                      "speed-up": round(med["padded"] / med["real tokens"], 2),
                      "max_abs_diff": float((full - cut).abs().max())}))


if __name__ == "__main__":
    main()
