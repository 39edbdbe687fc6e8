"""Cost of dense segmentation against one ``encode_image`` at the model's input size.

    python bench/segment_speed.py [--model shapes-clip] [--repeats 30] [--threads 2]

For one image at the model's input size (one sliding window) it times, as the median of ``--repeats`` runs
after warm-up, on the same pre-normalised tensor:
(a) ``model.encode_image`` (the stock forward, the reference);
(b) ``dense.patch_embeddings`` for each variant (the stock blocks 0..L-2 + the re-computed last block);
(c) the whole ``dense_logits`` call from a PIL image (normalise, windows, cosine, upsampling), 48 labels;
(d) the LSeg head (``--head``, default lseg-shapes when bundled): hooks + decoder + logits.
Prints a markdown table with the ratio to (a); the issue's target is (b)/(a) <= 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def timed_all(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms per call of each function; calls interleaved round-robin so machine load hits all alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(r) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="shapes-clip")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--head", default=None, help="LSeg head (default lseg-shapes for shapes-clip; 'none')")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clipkit import dense, lseg
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_model
    from clipkit.world.scenes import CATEGORIES, SceneConfig, generate_scene

    model = load_model(args.model, args.pretrained, device="cpu")
    h, w = model.image_size
    image = generate_scene(3, 0, SceneConfig(size=(w, h))).image
    pixels = dense.image_tensor(model, image)
    text = text_embeddings(model, list(CATEGORIES))
    fns = {"encode_image (stock forward)": lambda: model.model.encode_image(pixels)}
    for v in dense.VARIANTS:
        fns[f"patch_embeddings {v}"] = lambda v=v: dense.patch_embeddings(model, pixels, v)
    fns["dense_logits naclip (PIL in, 48 labels, upsampled)"] = lambda: dense.dense_logits(model, image, text)
    head_spec = args.head or ("lseg-shapes" if args.model == "shapes-clip" else None)
    if head_spec and head_spec != "none":
        head = lseg.load_head(head_spec, model)
        fns[f"lseg_logits {head_spec} (PIL in, 48 labels)"] = lambda: lseg.lseg_logits(model, head, image, text)
    with torch.inference_mode():
        times = timed_all(fns, args.repeats)
    ref = times["encode_image (stock forward)"]
    rows = list(times.items())
    print(f"model {args.model}, input {h}x{w}, {args.threads} threads, median of {args.repeats}\n")
    print("| path | ms/image | × encode_image |\n|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / ref:.2f} |")


if __name__ == "__main__":
    main()
