"""mIoU of every training-free dense variant and of the LSeg head on held-out shapes-world scenes.

    python bench/segment_miou.py [--model shapes-clip] [--n 100] [--seed 9001] [--threads 2]
        [--background background] [--threshold T] [--min-cosine C] [--variants naclip,...] [--head lseg-shapes]
        [--shifts S]

Exports ``--n`` scenes of stream ``--seed`` (never used for training: shapes-clip and the LSeg head train on
other seeds) at the model's input size with 1–4 objects into a temporary folder, then runs the same evaluator
as ``clipkit eval segment DATA --labels-from-data`` (all 48 category names + background prompts) for each
variant and for the head. Prints a markdown table (mIoU, pixel accuracy, ms/image) and the JSON rows.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="shapes-clip")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=9001)
    parser.add_argument("--max-objects", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="plain,maskclip,sclip,clearclip,naclip")
    parser.add_argument("--background", default=None, help="background prompts (default: the library's)")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--min-cosine", type=float, default=None,
                        help="background below this best-label cosine (default: the model's calibrated value)")
    parser.add_argument("--head", default=None, help="LSeg head (default lseg-shapes when bundled; 'none')")
    parser.add_argument("--shifts", type=int, default=None, help="sub-patch shifted passes (training-free)")
    parser.add_argument("--labels-per-image", action="store_true",
                        help="segment each scene with only its own categories (as eval --labels-per-image)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clipkit import lseg
    from clipkit.evaluation.segmentation import evaluate_segment
    from clipkit.registry import load_model
    from clipkit.world.export import export

    model = load_model(args.model, args.pretrained, device="cpu")
    h, w = model.image_size
    opts = {k: v for k, v in {"background": args.background, "threshold": args.threshold,
                              "min_cosine": args.min_cosine, "shifts": args.shifts}.items() if v is not None}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = export(tmp, n=args.n, seed=args.seed, size=(w, h), max_objects=args.max_objects)
        for variant in [v for v in args.variants.split(",") if v]:
            rows.append(evaluate_segment(data, model, variant=variant, labels_per_image=args.labels_per_image,
                                         **opts))
        head = args.head or ("lseg-shapes" if "lseg-shapes" in lseg.bundled_heads() else None)
        if head and head != "none":
            rows.append(evaluate_segment(data, model, head=head, threshold=args.threshold,
                                         labels_per_image=args.labels_per_image))
    print(f"model {args.model}, {args.n} held-out scenes (seed {args.seed}, {w}x{h}, 1-{args.max_objects} "
          f"objects), labels: all 48 categories, options {opts or 'library defaults'}\n")
    print("| method | mIoU | pixel acc. | ms/image |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['miou']:.3f} | {r['pixel_accuracy']:.3f} | {r['ms_per_image']:.1f} |")
    print()
    for r in rows:
        print(json.dumps({k: r[k] for k in ("method", "miou", "pixel_accuracy", "ms_per_image", "n_images")}))


if __name__ == "__main__":
    main()
