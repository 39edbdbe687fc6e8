"""Throughput of `clipkit embed` and latency of `clipkit search` (exact and FAISS).

    python bench/embed_search.py embed --n 500 --threads 1 2 --rounds 3
    python bench/embed_search.py embed --model ViT-B-32 --pretrained random --n 64 --threads 1 --rounds 2
    python bench/embed_search.py search --rows 100000 --dim 64 --data clusters sphere

``embed``: ``--n`` shapes-world scenes (224 px PNGs, as ``clipkit world export`` writes them) embedded with
shapes-clip through :func:`clipkit.collection.embed.embed` (the CLI's path: runner, decoding workers, shard
writer, parquet) into a fresh folder per run, at each ``--threads``; beside it the model-only ceiling (the same
batches of pre-decoded, preprocessed tensors through ``encode_image``). Images/s, median over ``--rounds``.

``search``: a synthetic collection of ``--rows`` float16, L2-normalised ``--dim`` vectors written with the
shard writer (10,000-row shards): ``sphere`` = uniform on the sphere (no structure: the worst case for IVF),
``clusters`` = 1,000 random centres + Gaussian noise (cosine to the centre ≈ 0.78, closer to real embeddings).
Per query (one query at a time, median of ``--repeats``): the exact chunked search alone, the FAISS search alone
(index in memory), and the FAISS build (index choice by autofaiss's rule, nprobe tuned to recall 0.95).
Recall@10 of FAISS against exact on 100 fresh queries from the same distribution. Writes
bench/results/embed_search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the decoding workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_scenes(folder: Path, n: int) -> None:
    from clipkit.world.scenes import generate_scene

    for i in range(n):
        generate_scene(seed=5, index=i).image.save(folder / f"scene_{i:06d}.png")


def bench_embed(args: argparse.Namespace) -> dict:
    import torch

    from clipkit.collection.embed import EmbedPredictor, embed
    from clipkit.device import set_threads
    from clipkit.images import load_image
    from clipkit.registry import load_model

    out: dict = {"n": args.n, "model": args.model, "pretrained": args.pretrained, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        make_scenes(images, args.n)
        model = load_model(args.model, args.pretrained or None, device="cpu")
        batch = EmbedPredictor(model).default_batch_size
        pixels = torch.stack([model.preprocess(load_image(p)) for p in sorted(images.iterdir())])
        for threads in args.threads:
            set_threads(threads)
            embed_rates, ceiling_rates, cpu_ms = [], [], []
            for r in range(args.rounds):
                started, cpu = time.perf_counter(), cpu_seconds()
                summary = embed(str(images), Path(tmp) / f"E{threads}_{r}", model=args.model,
                                pretrained=args.pretrained or None, quiet=True)
                embed_rates.append(summary["images"] / (time.perf_counter() - started))
                cpu_ms.append(1000 * (cpu_seconds() - cpu) / summary["images"])
                started = time.perf_counter()
                for i in range(0, len(pixels), batch):
                    model.encode_image(pixels[i:i + batch])
                ceiling_rates.append(len(pixels) / (time.perf_counter() - started))
            row = {"embed_img_s": statistics.median(embed_rates), "ceiling_img_s": statistics.median(ceiling_rates),
                   "embed_range": [min(embed_rates), max(embed_rates)], "batch_size": batch,
                   "cpu_ms_per_image": statistics.median(cpu_ms)}
            row["ratio"] = row["embed_img_s"] / row["ceiling_img_s"]
            out["runs"][str(threads)] = row
            print(f"threads {threads}: embed {row['embed_img_s']:.1f} img/s (range {min(embed_rates):.1f}–"
                  f"{max(embed_rates):.1f}; {row['cpu_ms_per_image']:.1f} CPU ms/image, workers included), model "
                  f"alone {row['ceiling_img_s']:.1f} img/s, ratio {row['ratio']:.2f}, load {os.getloadavg()[0]:.1f}",
                  flush=True)
    return out


def synthetic(kind: str, rows: int, dim: int, rng: np.random.Generator, centres: np.ndarray | None = None):
    if kind == "sphere":
        data = rng.normal(size=(rows, dim)).astype(np.float32)
    else:
        assert centres is not None
        data = centres[rng.integers(len(centres), size=rows)] + 0.1 * rng.normal(size=(rows, dim)).astype(np.float32)
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def write_collection(folder: Path, data: np.ndarray, layout: str = "parquet") -> dict:
    from clipkit.collection import manifest as mf
    from clipkit.collection import shards as sh

    manifest = {"format": mf.FORMAT, "version": mf.VERSION, "layout": layout, "dim": data.shape[1],
                "dtype": "float16", "normalize": True, "model": {"spec": "synthetic", "identity": "synthetic"},
                "sets": {}}
    writer = sh.ShardWriter(folder, manifest, "image", shard_size=10_000)
    for i, vector in enumerate(data):
        writer.add(f"row{i:07d}", vector, width=0, height=0)
    writer.flush()
    return manifest


def timed(step, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (process) milliseconds of ``step(i)`` over ``repeats`` calls."""
    wall, cpu = [], []
    for i in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        step(i)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def bench_search(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads[0])
    out: dict = {"rows": args.rows, "dim": args.dim, "threads": torch.get_num_threads(), "data": {}}
    from clipkit.registry import load_model

    model = load_model("shapes-clip", device="cpu")
    out["text_query_ms"], out["text_query_cpu_ms"] = timed(lambda i: model.encode_text([f"a red circle {i}"]),
                                                           args.repeats)
    print(f"embedding one text query (shapes-clip): {out['text_query_ms']:.2f} ms")
    for kind in args.data:
        out["data"][kind] = search_one(kind, args)
    return out


def search_one(kind: str, args: argparse.Namespace) -> dict:
    """The figures of one synthetic distribution (see the module docstring)."""
    import torch

    from clipkit.collection.config import SearchConfig
    from clipkit.collection.faiss_index import load_or_build
    from clipkit.collection.search import exact_search

    rng = np.random.default_rng(0)
    centres = synthetic("sphere", 1000, args.dim, rng)
    data = synthetic(kind, args.rows, args.dim, rng, centres)
    tests = synthetic(kind, 100, args.dim, rng, centres)
    queries = torch.from_numpy(tests)
    row: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("parquet", "clip-retrieval"):
            folder = Path(tmp) / layout
            manifest = write_collection(folder, data, layout)
            row[f"exact_ms_{layout}"], row[f"exact_cpu_ms_{layout}"] = timed(
                lambda i, f=folder, m=manifest: exact_search(f, m, queries[i % 100:i % 100 + 1], 10),
                args.repeats)
        config = SearchConfig(top_k=10, index="faiss", faiss_key=args.faiss_key)
        started = time.perf_counter()
        index, meta = load_or_build(folder, manifest, config)
        row["build_s"] = time.perf_counter() - started
        row["faiss_ms"], row["faiss_cpu_ms"] = timed(lambda i: index.search(tests[i % 100:i % 100 + 1], 10),
                                                     args.repeats)
        _, truth = exact_search(folder, manifest, queries, 10)
        _, found = index.search(tests, 10)
        row["recall_at_10"] = float(np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth, found,
                                                                                       strict=True)]))
        started = time.perf_counter()
        load_or_build(folder, manifest, config)  # reuse: read the saved index back
        row["reload_s"] = time.perf_counter() - started
    row.update(faiss_key=meta["key"], nprobe=meta["nprobe"], tuning_recall=meta["recall"],
               speedup=row["exact_ms_parquet"] / row["faiss_ms"])
    print(f"{kind}: exact {row['exact_ms_parquet']:.1f} ms/query parquet (CPU {row['exact_cpu_ms_parquet']:.1f}),"
          f" {row['exact_ms_clip-retrieval']:.1f} npy (CPU {row['exact_cpu_ms_clip-retrieval']:.1f}); faiss "
          f"{row['faiss_key']} nprobe {row['nprobe']} {row['faiss_ms']:.2f} ms/query ({row['speedup']:.0f}x "
          f"parquet exact), recall@10 {row['recall_at_10']:.3f}, build {row['build_s']:.1f} s, reload "
          f"{row['reload_s']:.2f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("embed", "search"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--model", default="shapes-clip")
    parser.add_argument("--pretrained", default="", help="e.g. random for an open_clip architecture")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--data", nargs="*", default=["clusters", "sphere"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--faiss-key", default=None, help="an index_factory key instead of the autofaiss rule")
    args = parser.parse_args()
    result = bench_embed(args) if args.what == "embed" else bench_search(args)
    result["machine"] = platform.processor() or platform.machine()
    result["load_average"] = os.getloadavg()
    path = Path(__file__).parent / "results" / "embed_search.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    key = args.what if args.what == "search" or args.model == "shapes-clip" else f"embed {args.model}"
    path.write_text(json.dumps({**previous, key: result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
