"""How often shapes-clip recognises the shape in a CLIPasso sketch of a one-object shapes-world scene.

For ``--scenes`` scenes with one object each (from the shapes world, seed ``--seed``), sketch the image with
shapes-clip as the loss model, then classify the rendered sketch among the six shape names ("circle",
"square", ...; colour is gone from a black sketch) with shapes-clip itself, zero-shot, its default templates.
Reported next to it: the same classification of the original images (the model's ceiling), of the initial
strokes, and of random strokes (same count and length, start points uniform) — the floor is chance, 1/6.

    PYTHONPATH=. python bench/sketch_recognition.py --scenes 24 --iterations 300 --seeds 1 --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from clipkit.clipasso import SketchConfig, sketch_image
from clipkit.clipasso.init import random_walk_strokes
from clipkit.clipasso.loss import SketchLoss
from clipkit.clipasso.optimize import initial_strokes, start_distribution, target_tensor
from clipkit.prompts import text_embeddings
from clipkit.registry import load_model
from clipkit.render import get_renderer, to_image
from clipkit.world.scenes import SHAPES, SceneConfig, generate_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-clip", help="the bundled model, or a folder in its layout")
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--canvas", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    text = text_embeddings(loaded, list(SHAPES))
    renderer = get_renderer("torch")
    opts = SketchConfig(iterations=args.iterations, seeds=args.seeds, canvas=args.canvas)
    hits = {"original image": 0, "random strokes": 0, "initial strokes": 0, "CLIPasso sketch": 0}
    seconds, iterations = [], []
    cfg = SceneConfig(size=(224, 224), max_objects=1)
    for i in range(args.scenes):
        scene = generate_scene(args.seed, i, cfg)
        truth = SHAPES.index(scene.objects[0].shape)
        target = target_tensor(scene.image, opts.canvas)
        loss_fn = SketchLoss(loaded, target, generator=torch.Generator().manual_seed(0))
        rng = np.random.default_rng(i)
        candidates = {
            "original image": target,
            "random strokes": random_walk_strokes(rng.random((opts.strokes, 2)), (opts.canvas,) * 2, rng),
            "initial strokes": initial_strokes(start_distribution(loaded, target, opts), opts, opts.seed),
        }
        out = sketch_image(scene.image, loaded, opts)
        candidates["CLIPasso sketch"] = out.points
        seconds.append(out.seconds)
        iterations.append(out.iterations)
        guesses = []
        for name, thing in candidates.items():
            if isinstance(thing, np.ndarray):
                with torch.no_grad():
                    alpha = renderer.render(torch.from_numpy(thing), opts.width, opts.canvas, opts.canvas)
                thing = to_image(alpha)
            guess = int((loss_fn.embedding(thing) @ text.T).argmax())
            hits[name] += int(guess == truth)
            guesses.append(SHAPES[guess])
        print(f"scene {i}: {scene.objects[0].shape:8s} → original / random / initial / sketch: "
              f"{' / '.join(guesses)} ({out.seconds:.0f} s, {out.iterations} it)", flush=True)
    n = args.scenes
    print(f"\n{n} one-object scenes (seed {args.seed}), canvas {opts.canvas}, {opts.strokes} strokes, "
          f"≤{opts.iterations} it × {opts.seeds} seed(s), threads {torch.get_num_threads()}")
    print("| input to shapes-clip | shape recognised |")
    print("|---|---|")
    for name, k in hits.items():
        print(f"| {name} | {k}/{n} = {k / n:.0%} |")
    print(f"| (chance) | 1/6 = 17% |\n\nmean time per sketch {np.mean(seconds):.1f} s, "
          f"mean iterations of the kept seed {np.mean(iterations):.0f}")


if __name__ == "__main__":
    main()
