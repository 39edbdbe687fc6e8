"""COCO AP of `clipkit detect` on held-out shapes-world scenes, for each region path, with ms/image.

    python bench/detect_eval.py [--model shapes-clip] [--n 100] [--seed 2026] [--paths image,fast,ensemble]
                                [--set key=value ...]

Exports ``--n`` scenes of stream ``--seed`` (disjoint from shapes-clip's training stream 0) to a temporary
folder (or uses ``--data``), runs ``clipkit.evaluation.detection.evaluate_detection`` once per path and prints
a markdown table: AP, AP50, AP75, ms/image (proposals + region embeddings + scoring; image decoding and the
one-off label text embeddings excluded) and the proposal share of that time. ``--set`` passes extra detect
options (``--set score_map_proposals=False``). Writes the raw figures to bench/results/detect.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import tempfile
import time
from pathlib import Path


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
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
    ap.add_argument("--data", default=None, help="an existing export instead of a fresh one")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--paths", default="image,fast,ensemble")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], dest="sets")
    ap.add_argument("--json", default="bench/results/detect.json")
    args = ap.parse_args()

    import torch

    from clipkit.evaluation.detection import evaluate_detection
    from clipkit.registry import load_model
    from clipkit.world.export import export

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.pretrained, device="cpu")
    extra = parse_sets(args.sets)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or export(Path(tmp) / "data", n=args.n, seed=args.seed, size=args.size)
        rows = []
        for path in args.paths.split(","):
            t0 = time.perf_counter()
            res = evaluate_detection(data, model, limit=args.n, path=path, **extra)
            res["wall_s"] = round(time.perf_counter() - t0, 1)
            rows.append(res)
            print(json.dumps(res), flush=True)
    print(f"\nmodel {args.model}, {rows[0]['images']} held-out scenes "
          f"({args.data or f'seed {args.seed}, {args.size} px'}), "
          f"options {extra or 'defaults'}, {platform.machine()}, torch threads {args.threads}\n")
    print("| path | AP | AP50 | AP75 | ms/image | of which proposals | region stage | detections/image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        region = r["ms_regions_per_image"]  # region embeddings + scoring
        print(f"| {r['path']} | {r['ap']:.3f} | {r['ap50']:.3f} | {r['ap75']:.3f} | {r['ms_per_image']:.0f} | "
              f"{r['ms_proposals_per_image']:.0f} | {region:.1f} | {r['detections_per_image']:.1f} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"model": args.model, "n": args.n, "seed": args.seed,
                                           "options": extra, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
