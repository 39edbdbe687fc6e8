"""CLIPasso speed on CPU: iterations/s per loss model, and the time to a finished sketch.

For each model: the steady-state iterations/s of the full CLIPasso step (render 16 strokes at 224 px, 1 clean +
4 augmented views through CLIP, geometric + semantic loss, backward, Adam), measured over ``--iterations`` steps
of one seed, plus the time of a finished sketch with the library defaults (up to 2001 iterations × 3 seeds with
early stopping) when ``--full`` lists the model. RN50 and ViT-B-32 run with random weights (none can be
downloaded here): their speed is that of the real models, their early-stopping point is not.

    PYTHONPATH=. python bench/sketch_speed.py --models shapes-clip,RN50:random,ViT-B-32:random --threads 1
    PYTHONPATH=. python bench/sketch_speed.py --models shapes-clip --full shapes-clip
"""

from __future__ import annotations

import argparse
import time

import torch

from clipkit.clipasso import SketchConfig, sketch_image
from clipkit.clipasso.optimize import initial_strokes, optimise_seed, start_distribution, target_tensor
from clipkit.registry import load_model
from clipkit.world.scenes import SceneConfig, generate_scene


def _load(spec: str):
    name, _, tag = spec.partition(":")
    return load_model(name, tag or None, device="cpu")


def steady_rate(loaded, image, iterations: int) -> tuple[float, float]:
    """(iterations/s, seconds of setup: target, saliency, XDoG) over one seed without early stopping."""
    # min_delta < 0 never stops early; the config refuses it from users, so set it past validation
    opts = SketchConfig(iterations=iterations, seeds=1).model_copy(update={"min_delta": -1.0})
    t0 = time.perf_counter()
    target = target_tensor(image, opts.canvas)
    prob = start_distribution(loaded, target, opts)
    init = initial_strokes(prob, opts, 0)
    setup = time.perf_counter() - t0
    stamps: list[float] = []
    optimise_seed(loaded, target, init, opts, 0, on_step=lambda it, loss: stamps.append(time.perf_counter()))
    # evaluations happen every 10 steps: the rate between the first and the last one excludes warm-up
    steps = 10 * (len(stamps) - 1)
    return steps / (stamps[-1] - stamps[0]), setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="shapes-clip,RN50:random,ViT-B-32:random")
    ap.add_argument("--iterations", type=int, default=41, help="steps timed per model (a multiple of 10, +1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full", default="", help="models to also run to a finished default sketch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    image = generate_scene(0, 3, SceneConfig(size=(224, 224), max_objects=1)).image
    full = {m for m in args.full.split(",") if m}
    print(f"threads: {torch.get_num_threads()}")
    print("| loss model | it/s | s/it | setup s | est. 2001 it × 3 seeds | finished sketch (defaults) |")
    print("|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        loaded = _load(spec)
        rate, setup = steady_rate(loaded, image, args.iterations)
        estimate = 3 * 2001 / rate
        row = f"| {spec} | {rate:.2f} | {1 / rate:.3f} | {setup:.1f} | {estimate / 60:.0f} min |"
        print(row + " —" if spec not in full else row, flush=True)
        if spec in full:
            out = sketch_image(image, loaded, SketchConfig())
            seeds = ", ".join(f"{s}: {v:.4f}" for s, v in out.seed_losses.items())
            print(f"|   (finished) | | | | | {out.seconds:.0f} s; kept seed {out.seed} ran {out.iterations} it; "
                  f"losses {seeds} |", flush=True)


if __name__ == "__main__":
    main()
