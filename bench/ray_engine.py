"""--engine ray against the local engine: the same classify run over one webdataset shard of shapes-world scenes.

    python bench/ray_engine.py --n 2000 --cpus 2 --rounds 1
    python bench/ray_engine.py --n 2000 --cpus 2 --rounds 1 --model ViT-B-32 --pretrained random

Writes N fresh scenes (224 px JPEG) into a shard, starts a local Ray runtime with ``--cpus`` CPUs (its workers at
this process's priority: Ray's default nice +15 starves them on a shared machine), then runs
``clipkit.run("classify", shard, CATEGORIES, model=--model)`` (default the bundled shapes-clip; any registry
model, e.g. ViT-B-32 with random weights for the cost of a real CLIP) with the local engine and with
``engine="ray"`` in alternation, ``--rounds`` times. Prints wall time, images/s, the time to the first result
(start-up: Ray's actors import torch and load the model) and whether both engines gave the same top-1 labels.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

WORKER_NICENESS = "RAY_worker_niceness"  # Ray system-config override: workers at this process's priority


def write_shard(path: Path, n: int) -> None:
    import webdataset as wds

    from clipkit.world import generate_scene

    with wds.TarWriter(str(path)) as writer:
        for i in range(n):
            buffer = io.BytesIO()
            generate_scene(2026, i).image.save(buffer, "JPEG", quality=90)
            writer.write({"__key__": f"{i:08d}", "jpg": buffer.getvalue()})


def timed(shard: str, labels: list[str], **options) -> tuple[float, float, list[tuple[str, float, float]]]:
    """(wall s, s to the first result, per image (top-1 label, its score, its margin over the second))."""
    import clipkit

    start = time.perf_counter()
    first = None
    top = []
    for result in clipkit.run("classify", shard, labels, top_k=2, **options):
        first = first or time.perf_counter() - start
        if hasattr(result, "labels"):
            top.append((result.labels[0], float(result.scores[0]), float(result.scores[0] - result.scores[1])))
        else:
            top.append(("error", 0.0, 0.0))
    return time.perf_counter() - start, first or 0.0, top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=None, help="Ray actors (default: the engine's)")
    parser.add_argument("--model", default=None, help="registry model (default: the bundled shapes-clip)")
    parser.add_argument("--pretrained", default=None, help="its pretrained tag, e.g. random")
    args = parser.parse_args()
    model = {k: v for k, v in (("model", args.model), ("pretrained", args.pretrained)) if v is not None}
    os.environ[WORKER_NICENESS] = "0"
    import ray

    from clipkit.world import CATEGORIES

    labels = list(CATEGORIES)
    with tempfile.TemporaryDirectory() as tmp:
        shard = str(Path(tmp) / "scenes-00000.tar")
        write_shard(Path(shard), args.n)
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        print(f"ray.init: {time.perf_counter() - start:.1f} s")
        timed(shard, labels[:2], **model)  # warm the local model cache and imports once
        rows: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
        differ, near_ties, score_diff = 0, 0, 0.0
        for _ in range(args.rounds):
            wall, first, local_top = timed(shard, labels, **model)
            rows["local"].append((wall, first))
            wall, first, ray_top = timed(shard, labels, engine="ray", ray_concurrency=args.concurrency, **model)
            rows["ray"].append((wall, first))
            for (la, sa, margin), (lb, sb, _) in zip(local_top, ray_top, strict=True):
                differ += la != lb
                near_ties += la != lb and margin < 1e-3  # random weights: labels within float noise of a tie
                score_diff = max(score_diff, abs(sa - sb))
        print(f"| engine | wall s (median of {args.rounds}) | img/s | first result s |")
        print("|---|---:|---:|---:|")
        for engine, values in rows.items():
            wall = statistics.median(v[0] for v in values)
            first = statistics.median(v[1] for v in values)
            print(f"| {engine} | {wall:.1f} | {args.n / wall:.1f} | {first:.1f} |")
        ratio = statistics.median(v[0] for v in rows["ray"]) / statistics.median(v[0] for v in rows["local"])
        print(f"model {args.model or 'shapes-clip'}:{args.pretrained or ''}; ray / local wall time: {ratio:.2f}; "
              f"top-1 labels differing: {differ} of {args.n * args.rounds} ({near_ties} of them within 1e-3 of a "
              f"tie); largest top-1 score difference {score_diff:.2e}; load average {os.getloadavg()[0]:.1f}")
        ray.shutdown()


if __name__ == "__main__":
    main()
