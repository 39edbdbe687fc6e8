"""Throughput of `clipkit classify` against a naive per-image open_clip loop and the model alone.

    python bench/classify_throughput.py [--model ViT-B-32 --pretrained random] [--n 256] [--batch-size 32]

(a) clipkit: the library path the CLI runs (``clipkit.api.run``: decoding in DataLoader workers, batched encode);
(b) naive: the loop from open_clip's README, once per image: open + preprocess, tokenize the prompts, encode
    image and text, softmax (batch size 1, text re-encoded every time);
(b') naive with the text encoded once (batch size 1);
(c) ceiling: the model alone on pre-decoded, pre-resized tensors at the same batch size.
Images: ``--n`` JPEGs (640×480, shapes-world scenes) written to a temporary folder. Weights do not matter for
speed, so random init is fine. Prints a markdown table and writes bench/results/classify.json.
"""

from __future__ import annotations

import argparse
import json
import platform
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
        image = generate_scene(seed=7, index=i, config=config).image
        path = folder / f"img_{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="random")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive-n", type=int, default=64, help="images for the (slow) naive loops")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "classify.json"))
    args = parser.parse_args()

    from clipkit.api import run
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_model

    loaded = load_model(args.model, args.pretrained, device="cpu")
    model, preprocess, tokenizer = loaded.model, loaded.preprocess, loaded.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.n)
        text_embeddings(loaded, LABELS, [TEMPLATE])  # warm the text cache, as a second run would find it
        results = {}

        start = time.perf_counter()
        out = list(run("classify", paths, LABELS, model=loaded, templates=[TEMPLATE], batch_size=args.batch_size))
        results["a_clipkit"] = len(out) / (time.perf_counter() - start)

        naive = paths[: args.naive_n]
        start = time.perf_counter()
        with torch.no_grad():
            for path in naive:
                image = preprocess(Image.open(path)).unsqueeze(0)
                text = tokenizer([TEMPLATE.format(label) for label in LABELS])
                image_features = F.normalize(model.encode_image(image), dim=-1)
                text_features = F.normalize(model.encode_text(text), dim=-1)
                (100.0 * image_features @ text_features.T).softmax(dim=-1)
        results["b_naive_readme_loop"] = len(naive) / (time.perf_counter() - start)

        start = time.perf_counter()
        with torch.no_grad():
            text_features = F.normalize(model.encode_text(tokenizer([TEMPLATE.format(lb) for lb in LABELS])), dim=-1)
            for path in naive:
                image = preprocess(Image.open(path)).unsqueeze(0)
                (100.0 * F.normalize(model.encode_image(image), dim=-1) @ text_features.T).softmax(dim=-1)
        results["b2_naive_text_once"] = len(naive) / (time.perf_counter() - start)

        tensors = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(tensors), args.batch_size):
                model.encode_image(tensors[i: i + args.batch_size])
        results["c_model_alone"] = len(tensors) / (time.perf_counter() - start)

    report = {
        "model": f"{args.model}:{args.pretrained}", "images": args.n, "naive_images": args.naive_n,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "cpu": platform.processor() or "cpu",
        "images_per_s": {k: round(v, 2) for k, v in results.items()},
        "a_over_c": round(results["a_clipkit"] / results["c_model_alone"], 3),
        "a_over_b": round(results["a_clipkit"] / results["b_naive_readme_loop"], 2),
        "a_over_b2": round(results["a_clipkit"] / results["b2_naive_text_once"], 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| path | images/s |\n|---|---|")
    for key, value in report["images_per_s"].items():
        print(f"| {key} | {value} |")
    print(f"\n(a)/(c) = {report['a_over_c']}, (a)/(b) = {report['a_over_b']}, (a)/(b') = {report['a_over_b2']}")


if __name__ == "__main__":
    main()
