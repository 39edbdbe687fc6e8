"""GPU figures in one prepared run (issue 20, item 9): what clipkit does on one CUDA device.

1. classify img/s from JPEG files with ViT-B-32 (random weights: speed is the real model's, accuracy is not
   measured), two decode paths: (a) the runner's CPU decode workers (PIL, draft mode, resize in the worker),
   (b) GPU decode (``torchvision.io.decode_jpeg(device="cuda")`` on the file bytes, resize + normalise on the
   device), each beside (c) the model alone on pre-decoded tensors (the ceiling) — interleaved rounds, medians;
2. segment and detect per-image ms at the defaults (ViT-B-32 dense path, shapes-world scenes at 640×480), and
   group's with the bundled shapes-groupvit;
3. one finished sketch (CLIPasso, RN50 random weights for speed, default schedule capped by ``--sketch-iters``).

Without CUDA it says so and exits 0 (``--device cpu --quick`` runs every path small, to check the script).
The field's reference point: clip-retrieval reports about 1,450 img/s on one consumer GPU, bound by decode and
resize.

    python bench/gpu.py                      # on the GPU machine
    python bench/gpu.py --device cpu --quick # anywhere: a smoke run of every path
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def jpegs(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """``n`` shapes-world scenes saved as JPEG (quality 90) at ``size`` = (W, H)."""
    from clipkit.world import generate_scene
    from clipkit.world.scenes import SceneConfig

    paths = []
    for i in range(n):
        p = folder / f"scene_{i:05d}.jpg"
        if i < 64:
            generate_scene(11, i, SceneConfig(size=size)).image.convert("RGB").save(p, quality=90)
        else:  # reuse the first 64 files' bytes: decode cost is what matters, not variety
            p.write_bytes(paths[i % 64].read_bytes())
        paths.append(p)
    return paths


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def classify_paths(paths: list[Path], device: str, batch: int, rounds: int) -> dict:
    """img/s of (a) clipkit classify with CPU decode workers, (b) GPU decode, (c) the model alone."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg

    import clipkit
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_model

    labels = ["red circle", "blue square", "green triangle", "yellow star"]
    model = load_model("ViT-B-32", "random", device=device)
    text = text_embeddings(model, labels, None)
    size = model.image_size[0]
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1)
    pre = torch.randn(batch, 3, size, size, device=device)

    def path_a() -> None:
        clipkit.classify([str(p) for p in paths], labels, model=model, batch_size=batch)

    def path_b() -> None:
        data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
        with torch.inference_mode():
            for i in range(0, len(data), batch):
                imgs = decode_jpeg(data[i:i + batch], device=device)
                x = torch.stack([F.interpolate(im[None].float() / 255, size=(size, size), mode="bilinear",
                                               antialias=True)[0] for im in imgs])
                emb = F.normalize(model.model.encode_image((x - mean) / std), dim=-1)
                (100 * emb @ text.T).softmax(-1).cpu()

    def path_c() -> None:
        with torch.inference_mode():
            for _ in range(0, len(paths), batch):
                F.normalize(model.model.encode_image(pre), dim=-1).cpu()

    runs: dict[str, list[float]] = {"a_cpu_decode": [], "b_gpu_decode": [], "c_model_alone": []}
    for _ in range(rounds):
        for name, fn in zip(runs, (path_a, path_b, path_c), strict=True):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            runs[name].append(len(paths) / (time.perf_counter() - t0))
    return {k: {"median": round(statistics.median(v), 1), "min": round(min(v), 1), "max": round(max(v), 1)}
            for k, v in runs.items()}


def per_image_ms(method: str, paths: list[Path], model, **options) -> float:
    """Median ms per image of ``clipkit.<method>`` over ``paths`` (model loaded once, one warm-up image)."""
    import clipkit

    fn = getattr(clipkit, method)
    fn([str(paths[0])], model=model, **options)
    times = []
    for p in paths:
        t0 = time.perf_counter()
        fn([str(p)], model=model, **options)
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check every path runs")
    ap.add_argument("--n", type=int, default=2048, help="JPEGs for the classify figures")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sketch-iters", type=int, default=2001)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (run it on a GPU machine, or "
              "--device cpu --quick to check the script)")
        return 0
    n, batch, iters = (16, 8, 3) if args.quick else (args.n, args.batch, args.sketch_iters)
    rounds = 1 if args.quick else args.rounds
    out: dict = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
                 "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        paths = jpegs(Path(tmp), n, (640, 480))
        out["classify_img_s"] = classify_paths(paths, args.device, batch, rounds)
        print(json.dumps(out), flush=True)
        few = paths[: 4 if args.quick else 32]
        from clipkit.registry import load_model

        vit = load_model("ViT-B-32", "random", device=args.device)
        out["segment_ms"] = per_image_ms("segment", few, vit, labels=["red circle", "blue square"])
        out["detect_ms"] = per_image_ms("detect", few, vit, labels=["red circle", "blue square"])
        from clipkit.registry import load_groupvit_model

        groupvit = load_groupvit_model("shapes-groupvit", device=args.device)
        out["group_ms"] = per_image_ms("group", few, groupvit, labels=["red circle", "blue square"])
        print(json.dumps(out), flush=True)
        import clipkit

        t0 = time.perf_counter()
        clipkit.sketch([str(paths[0])], model="RN50", pretrained="random", device=args.device, iterations=iters,
                       **({"seeds": 1} if args.quick else {}), out_dir=tmp)
        out["sketch_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
