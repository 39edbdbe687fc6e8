"""Renderer speed: forward + backward of 16 strokes on a 224-px canvas (CLIPasso's scene), one CPU thread.

Strokes are drawn like CLIPasso's: start points anywhere on the canvas and a random walk — both at the initial
size (steps ±0.025 of the canvas) and at a typical optimised size (steps ±0.15, strokes ~60–100 px long).

    PYTHONPATH=. python bench/sketch_render.py [--threads 1] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from clipkit.clipasso.init import random_walk_strokes
from clipkit.render import get_renderer


def strokes(n: int, size: int, radius: float, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    starts = 0.1 + 0.8 * rng.random((n, 2))
    return torch.tensor(random_walk_strokes(starts, (size, size), rng, radius=radius))


def time_renderer(name: str, pts: torch.Tensor, size: int, repeats: int) -> list[float]:
    renderer = get_renderer(name)
    weights = torch.rand(size, size, generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(repeats + 5):
        p = pts.clone().requires_grad_(True)
        t0 = time.perf_counter()
        alpha = renderer.render(p, 3.0, size, size)
        (alpha * weights).sum().backward()
        if i >= 5:  # warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--strokes", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--renderers", default="torch", help="comma-separated: torch,diffvg")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| renderer | strokes | canvas | stroke size | threads | fwd+bwd median ms | p90 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in args.renderers.split(","):
        for label, radius in (("initial (walk ±0.025)", 0.05), ("optimised-like (walk ±0.15)", 0.3)):
            times = time_renderer(name, strokes(args.strokes, args.size, radius, 0), args.size, args.repeats)
            p90 = sorted(times)[int(0.9 * len(times)) - 1]
            print(f"| {name} | {args.strokes} | {args.size} | {label} | {args.threads} | "
                  f"{statistics.median(times):.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
