"""Accuracy of `clipkit ground` (IoU ≥ 0.5) on held-out shapes-world referring expressions, with ms/phrase.

    python bench/ground_eval.py [--model shapes-clip] [--n 100] [--seed 2026]
                                [--configs "region=image,context=blur" "region=image,context=none" ...]

Exports ``--n`` scenes of stream ``--seed`` (disjoint from shapes-clip's training stream 0) to a temporary
folder (or uses ``--data``) and runs ``clipkit.evaluation.grounding.evaluate_grounding`` once per config
(``key=value`` pairs separated by commas; empty = the defaults). Prints a markdown table (accuracy overall,
on distractor cases and on the rest, ms/phrase including the phrase's text embedding) and writes the raw
figures to bench/results/ground.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import tempfile
from pathlib import Path


def parse_config(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-clip")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=[""])
    ap.add_argument("--json", default="bench/results/ground.json")
    args = ap.parse_args()

    import torch

    from clipkit.evaluation.grounding import evaluate_grounding
    from clipkit.registry import load_model
    from clipkit.world.export import export

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.pretrained, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or export(Path(tmp) / "data", n=args.n, seed=args.seed, size=args.size)
        for text in args.configs:
            cfg = parse_config(text)
            res = {"config": text or "defaults", **evaluate_grounding(data, model, limit=args.n, **cfg)}
            rows.append(res)
            print(json.dumps(res), flush=True)
    print(f"\nmodel {args.model}, {rows[0]['images']} held-out scenes "
          f"({args.data or f'seed {args.seed}, {args.size} px'}), "
          f"{rows[0]['expressions']} expressions ({rows[0]['distractor_cases']} with a distractor), "
          f"{platform.machine()}, torch threads {args.threads}\n")
    print("| config | accuracy | distractor | no distractor | ms/phrase |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['accuracy']:.3f} | {r['accuracy_distractor'] or 0:.3f} | "
              f"{r['accuracy_no_distractor'] or 0:.3f} | {r['ms_per_phrase']:.0f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "n": args.n, "seed": args.seed, "rows": rows},
                                          indent=1))


if __name__ == "__main__":
    main()
