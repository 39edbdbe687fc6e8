"""Peak RSS of `clipkit METHOD` at defaults on hostile inputs (docs/reliability.md).

Cases: a 3000x1 PNG strip (9 KB that a naive resize turns into gigabytes), an 8000x8000 JPEG, and a folder of N
small images (results stream: RSS must not grow with N). Each run is a fresh `python -m clipkit` process on the
bundled models; the figure is its ``ru_maxrss`` (the decoding workers, separate processes, are reported apart).

    python bench/reliability_rss.py --n-small 30000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

TEXT = {"ground": ["--caption", "a red circle left of a blue square"], "sketch": []}
LABELS = ["-l", "red circle,blue square,green triangle"]


WRAPPER = ("import resource, subprocess, sys\n"
           "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
           "print(done.stdout.splitlines()[0] if done.stdout else '')\n")


def run(args: list[str]) -> dict:
    """One CLI run in a fresh wrapper process: exit code and peak RSS (MB) of the largest process it started
    (the main process or a decoding worker), so each case is measured on its own."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "clipkit", *args, "-q", "-f",
                          "jsonl"], capture_output=True, text=True, check=True).stdout.splitlines()
    rc, peak = out[0].split()
    return {"rc": int(rc), "peak_mb": round(int(peak) / 1024, 1), "seconds": round(time.perf_counter() - t0, 1),
            "first": out[1][:160] if len(out) > 1 else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-small", type=int, default=30000)
    ap.add_argument("--methods", default="classify,segment,group,detect,ground")
    args = ap.parse_args()
    methods = args.methods.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Image.new("RGB", (3000, 1), (200, 0, 0)).save(root / "strip.png")
        ramp = np.linspace(0, 255, 8000, dtype=np.uint8)
        Image.fromarray(np.stack([np.broadcast_to(ramp, (8000, 8000))] * 3, -1)).save(root / "big.jpg", quality=80)
        Image.fromarray(np.stack([np.broadcast_to(ramp[::8], (1000, 1000))] * 3, -1)).save(root / "k1.jpg")
        for method in methods:
            text = TEXT.get(method, LABELS)
            for case in ("strip.png", "k1.jpg", "big.jpg"):
                res = run([method, str(root / case), *text])
                rows.append({"method": method, "input": case, **res})
                print(json.dumps(rows[-1]), flush=True)
        small = root / "small"
        small.mkdir()
        tile = Image.new("RGB", (64, 48), (30, 120, 200))
        for i in range(args.n_small):
            tile.save(small / f"{i:06d}.png")
        res = run(["classify", str(small), *LABELS, "-o", str(root / "out.jsonl")])
        out = root / "out.jsonl"
        lines = len(out.read_text().splitlines()) if out.exists() else 0
        rows.append({"method": "classify", "input": f"{args.n_small} images", **res, "lines": lines})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
