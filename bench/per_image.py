"""Milliseconds per image of every method at its defaults, and the ratio to classify (issue 20, items 3 and 6).

The methods run interleaved over several rounds on the same shapes-world scenes (JPEG, 500×400), through the
library as the CLI runs them (``clipkit.<method>(paths, …)``: runner, decode, predictor), with the bundled
models loaded once, one torch thread and no decode workers (so the figure is the method's own work); the
minor page faults per image show how much fresh memory each call asks the kernel for (``$CLIPKIT_MALLOC=system``
leaves glibc's own malloc thresholds, for comparison with :func:`clipkit.device.keep_freed_memory`):

    python bench/per_image.py --n 20 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

LABELS = ["red circle", "blue square", "green triangle", "yellow star", "purple hexagon", "orange cross"]
CAPTION = "a red circle left of a blue square"


def scenes(folder: Path, n: int) -> list[str]:
    from clipkit.world import generate_scene
    from clipkit.world.scenes import SceneConfig

    paths = []
    for i in range(n):
        p = folder / f"scene_{i:03d}.jpg"
        generate_scene(4242, i, SceneConfig(size=(500, 400))).image.convert("RGB").save(p, quality=90)
        paths.append(str(p))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default="classify,segment,segment_head,detect,ground,group")
    args = ap.parse_args()
    import torch

    import clipkit
    from clipkit.registry import load

    torch.set_num_threads(1)
    clip = load(None, kind="clip")
    calls = {
        "classify": lambda p: clipkit.classify(p, LABELS, model=clip, workers=0),
        "segment": lambda p: clipkit.segment(p, LABELS, model=clip, workers=0),
        "segment_head": lambda p: clipkit.segment(p, LABELS, model=clip, head="lseg-shapes", workers=0),
        "detect": lambda p: clipkit.detect(p, LABELS, model=clip, workers=0),
        "ground": lambda p: clipkit.ground(p, CAPTION, model=clip, workers=0),
        "group": lambda p: clipkit.group(p, LABELS, workers=0),
    }
    chosen = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        paths = scenes(Path(tmp), args.n)
        for name in chosen:  # warm-up: text caches, lazy imports, the GroupViT load
            calls[name](paths[:1])
        ms: dict[str, list[float]] = {m: [] for m in chosen}
        faults: dict[str, list[float]] = {m: [] for m in chosen}
        for _ in range(args.rounds):
            for name in chosen:
                f0, t0 = minor_faults(), time.perf_counter()
                out = calls[name](paths)
                ms[name].append(1000 * (time.perf_counter() - t0) / len(paths))
                faults[name].append((minor_faults() - f0) / len(paths))
                assert not any(type(r).__name__ == "ErrorRecord" for r in out), name
    base = statistics.median(ms["classify"]) if "classify" in ms else None
    print("| method | ms/image (median) | range | ratio to classify | page faults/image |")
    print("|---|---:|---:|---:|---:|")
    for name, values in ms.items():
        ratio = f"{statistics.median(values) / base:.1f}" if base else "–"
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}–{max(values):.1f} | {ratio} "
              f"| {statistics.median(faults[name]):.0f} |")


def minor_faults() -> int:
    """The process's minor page faults so far (each a fresh 4 KiB page the kernel zeroes; 0 off Unix)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


if __name__ == "__main__":
    main()
