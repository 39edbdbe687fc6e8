"""The one-image call (issue 20, item 7): a single `clipkit classify|ground one.png` against the bare imports.

Interleaved rounds of fresh processes on the same image: (a) ``python -c "import torch, open_clip"``, (b)
``clipkit classify one.png -l …``, (c) ``clipkit ground one.png --caption …``, (d) the same with
``CLIPKIT_EAGER_OPEN_CLIP=1`` (open_clip imported with transformers, as before issue 20 item 7); median and
range of the wall times, and each command's ratio to (a) in the same round. ``--phases`` adds one in-process
breakdown of (c): imports, CLI modules, model load, predictor (text), first image.

    python bench/one_image.py --rounds 5 --phases
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = """
import time
t0 = time.perf_counter()
def mark(what):
    global t0
    t = time.perf_counter()
    print(f"{what}: {1000 * (t - t0):.0f} ms")
    t0 = t
import torch; mark("import torch")
from clipkit.openclip_import import open_clip_module; open_clip_module(); mark("import open_clip (clipkit's way)")
from clipkit.cli.app import app; mark("import clipkit.cli")
from clipkit.registry import load; m = load(None, kind="clip"); mark("load shapes-clip")
from clipkit.configs import GroundConfig
from clipkit.methods.ground import GroundPredictor
p = GroundPredictor(m, ("a red circle left of a blue square", None), GroundConfig()); mark("predictor + text")
from clipkit.runner import collect_inputs, run
list(run(p, collect_inputs([IMAGE]), keep_image=True, workers=0)); mark("first image")
"""


EAGER = "clipkit ground, open_clip imported with transformers (as before)"


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--phases", action="store_true")
    args = ap.parse_args()
    from clipkit.world import generate_scene
    from clipkit.world.scenes import SceneConfig

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        image = str(Path(tmp) / "one.png")
        generate_scene(5, 0, SceneConfig(size=(224, 224))).image.save(image)
        cmds = {
            "bare imports": [py, "-c", "import torch, open_clip"],
            "clipkit classify": [py, "-m", "clipkit", "classify", image, "-l", "red circle,blue square", "-q"],
            "clipkit ground": [py, "-m", "clipkit", "ground", image, "--caption",
                               "a red circle left of a blue square", "-q"],
        }
        times: dict[str, list[float]] = {k: [] for k in [*cmds, EAGER]}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                times[name].append(wall(cmd))
            times[EAGER].append(wall(cmds["clipkit ground"], {"CLIPKIT_EAGER_OPEN_CLIP": "1"}))
        base = times["bare imports"]
        print("| command | median s | range s | ratio to bare imports (median of rounds) |")
        print("|---|---:|---:|---:|")
        for name, ts in times.items():
            ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
            print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f}–{max(ts):.2f} | {ratio:.2f} |")
        if args.phases:
            out = subprocess.run([py, "-c", PHASES.replace("IMAGE", repr(image))], capture_output=True, text=True,
                                 check=True).stdout
            print("\nphases of one ground call, in process:\n" + out)


if __name__ == "__main__":
    main()
