"""Peak RSS and wall time of `clipkit segment` on large label sets and large images (issue 20, item 3).

Each case is a fresh `python -m clipkit segment` process (bundled shapes-clip, training-free default variant,
no decode workers (``--workers 0``), so the main process holds everything); the figure is its ``ru_maxrss``.
``--rev`` runs the same cases on another commit (a temporary git worktree), so before/after come from one invocation:

    python bench/segment_memory.py --rev 6d1caef
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = ("import resource, subprocess, sys\n"
           "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
           "print(done.stderr.strip().splitlines()[-1] if done.returncode else '')\n")


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    from clipkit.world import generate_scene
    from clipkit.world.scenes import COLOURS, SHAPES, SceneConfig

    small = tmp / "scene_500x400.png"
    generate_scene(7, 0, SceneConfig(size=(500, 400))).image.save(small)
    big = tmp / "scene_4000x3000.jpg"
    scene = generate_scene(7, 1, SceneConfig(size=(2000, 1500))).image  # the world draws at most 2048 px
    scene.resize((4000, 3000)).convert("RGB").save(big, quality=90)
    many = [f"{c} {s} {i}" for i in range(21) for c in COLOURS for s in SHAPES][:1000]
    (tmp / "labels1000.txt").write_text("\n".join(many) + "\n")
    (tmp / "labels48.txt").write_text("\n".join(f"{c} {s}" for c in COLOURS for s in SHAPES) + "\n")
    return [
        ("500x400, 1000 labels", [str(small), "--labels-file", str(tmp / "labels1000.txt")]),
        ("4000x3000 JPEG, 48 labels, --max-side 4000 (full size)",
         [str(big), "--labels-file", str(tmp / "labels48.txt"), "--max-side", "4000"]),
        ("4000x3000 JPEG, 48 labels, defaults (max side 1344)",
         [str(big), "--labels-file", str(tmp / "labels48.txt")]),
    ]


def measure(root: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "clipkit", "segment", *args,
                          "--workers", "0", "-q", "-f", "jsonl"], capture_output=True, text=True, env=env,
                         cwd=root, check=True).stdout.splitlines()
    rc, peak = out[0].split()
    return {"rc": int(rc), "peak_mb": round(int(peak) / 1024), "s": round(time.perf_counter() - t0, 1),
            "error": out[1] if len(out) > 1 else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", help="also measure this commit (before), in a temporary worktree")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    roots = {"HEAD (working tree)": here}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.rev:
            wt = tmp_path / "before"
            subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(wt), args.rev],
                           check=True)
            roots = {args.rev: wt, **roots}
        try:
            print("| case | " + " | ".join(f"{name}: peak MB / s" for name in roots) + " |")
            print("|---|" + "---:|" * len(roots))
            for label, case in cases(tmp_path):
                cells = []
                for root in roots.values():
                    m = measure(root, case)
                    cells.append(f"{m['peak_mb']} / {m['s']}" if m["rc"] == 0 else f"exit {m['rc']}: {m['error']}")
                print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        finally:
            if args.rev:
                subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tmp_path / "before")],
                               check=False)


if __name__ == "__main__":
    main()
