"""Throughput of `clipkit classify` against a fair naive open_clip loop and the model alone, interleaved.

    python bench/classify_throughput.py --model ViT-B-32 --pretrained random --n 128 --rounds 3 --threads 1

Every round runs the three paths one after the other on the same ``--n`` JPEGs (640×480 shapes-world scenes), so
load on the machine hits them alike; the table gives the median images/s over the rounds and the range:

(a) clipkit: ``clipkit.api.run("classify", …)`` as the CLI runs it (decoding in DataLoader workers, batched);
(b) naive, text once: the loop from open_clip's README with the label embeddings computed once: per image
    open + preprocess + encode_image (batch 1) + softmax — the fair baseline (re-encoding the prompts for every
    image, as the README's loop literally does, would flatter clipkit);
(c) ceiling: the model alone on pre-decoded, pre-resized tensors at the same batch size.

The text embeddings are warmed before the rounds (clipkit caches them; the naive loop computes them outside
its timer). Weights do not matter for speed, so random init is fine. Writes bench/results/classify.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

LABELS = ["red circle", "blue square", "green triangle", "yellow star", "purple hexagon", "orange cross",
          "a dog", "a cat", "a car", "a tree"]
TEMPLATE = "a photo of a {}."


def make_images(folder: Path, n: int) -> list[str]:
    from clipkit.world.scenes import SceneConfig, generate_scene

    paths = []
    config = SceneConfig(size=(640, 480))
    for i in range(n):
        path = folder / f"img_{i:04d}.jpg"
        generate_scene(seed=7, index=i, config=config).image.save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    from clipkit.api import run
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_model
    from clipkit.runner import Input, decode

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "classify.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, args.pretrained, device="cpu")
    model, preprocess = loaded.model, loaded.preprocess
    times: dict[str, list[float]] = {"a_clipkit": [], "b_naive_text_once": [], "c_model_alone": [],
                                     "d_decode_then_model": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.n)
        text = text_embeddings(loaded, LABELS, [TEMPLATE])  # warm: clipkit's cache, the naive loop's classifier
        tensors = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        short = min(loaded.image_size)

        def decode_one(path: str) -> torch.Tensor:
            return preprocess(decode(Input(path, path), None, short))

        for _ in range(args.rounds):
            start = time.perf_counter()
            out = list(run("classify", paths, LABELS, model=loaded, templates=[TEMPLATE],
                           batch_size=args.batch_size))
            times["a_clipkit"].append(time.perf_counter() - start)
            assert len(out) == len(paths)

            start = time.perf_counter()
            with torch.inference_mode():
                for path in paths:
                    image = preprocess(Image.open(path)).unsqueeze(0)
                    (100.0 * F.normalize(model.encode_image(image), dim=-1) @ text.T).softmax(dim=-1)
            times["b_naive_text_once"].append(time.perf_counter() - start)

            start = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, len(tensors), args.batch_size):
                    model.encode_image(tensors[i: i + args.batch_size])
            times["c_model_alone"].append(time.perf_counter() - start)

            # (d) the issue-20 ceiling "decode + model with the same decoder": clipkit's own decode (JPEG draft at
            # the model's size, the transform) in this process, then the model on the batches, no overlap
            start = time.perf_counter()
            with torch.inference_mode():
                decoded = [decode_one(p) for p in paths]
                for i in range(0, len(decoded), args.batch_size):
                    model.encode_image(torch.stack(decoded[i: i + args.batch_size]))
            times["d_decode_then_model"].append(time.perf_counter() - start)

    rate = {k: [args.n / t for t in v] for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in rate.items()}
    report = {
        "model": f"{args.model}:{args.pretrained}", "images": args.n, "rounds": args.rounds,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "cpu": platform.processor() or "cpu",
        "images_per_s_median": {k: round(v, 2) for k, v in med.items()},
        "images_per_s_range": {k: [round(min(v), 2), round(max(v), 2)] for k, v in rate.items()},
        "a_over_c": round(med["a_clipkit"] / med["c_model_alone"], 3),
        "a_over_b": round(med["a_clipkit"] / med["b_naive_text_once"], 2),
        "a_over_d": round(med["a_clipkit"] / med["d_decode_then_model"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| path | images/s (median) | range |\n|---|---:|---|")
    for key, value in report["images_per_s_median"].items():
        lo, hi = report["images_per_s_range"][key]
        print(f"| {key} | {value} | {lo}–{hi} |")
    print(f"\n(a)/(c) = {report['a_over_c']}, (a)/(b) = {report['a_over_b']}, (a)/(d) = {report['a_over_d']}")


if __name__ == "__main__":
    main()
