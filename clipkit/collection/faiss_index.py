"""``clipkit search --index faiss``: a FAISS index over an embedding folder, built once and kept in ``DIR/index/``.

The index type follows autofaiss's rule (``get_optimal_index_keys_v2`` with ``should_be_memory_mappable=True``,
criteo/autofaiss ``autofaiss/external/optimize.py``), i.e. IVF/PQ families, no HNSW graph:

* fewer than 1,000 vectors: ``Flat`` (autofaiss: ``IVF1,Flat`` for a mappable index; the same exact scan);
* an IVF-Flat index within the memory budget (``index_memory``, default 4G as clip-retrieval passes to
  autofaiss): ``IVF{c},Flat`` with autofaiss's cluster count ``c`` (``2**round(log2(4*sqrt(n)))`` below 1 M
  vectors, 16,384 below 10 M, …);
* otherwise ``OPQ{m}_{y},IVF{c}[_HNSW32],PQ{m}x8`` with the largest ``m < D`` in (256, 128, 64, 48, 32, 24, 16, 8,
  4) whose compression ``4D / (m + 8)`` fits the budget, ``y = (min(D // m, 6) + 1) * m``, and ``c`` = 16,384
  (< 10 M vectors), 65,536 (< 300 M) or 131,072; an HNSW32 coarse quantizer when ``c >= 1000``.

Training uses ``min(n, 100 * c)`` vectors (autofaiss's 100 points per cluster), sampled uniformly. Vectors are
added L2-normalised under the inner-product metric, so scores are cosine similarities as in the exact search.

**Deviations**, both for recall: autofaiss product-quantises from 1 M vectors even when flat codes fit the
budget; here flat codes are kept while they fit (measured at 1 M × 64: autofaiss's ``OPQ48_96,IVF16384_HNSW32,
PQ48x8`` reached recall@10 0.79 at best, built in 364 s; ``IVF4096,Flat`` recall 1.00 at 0.07 ms/query, built in
23 s — bench/README.md). And autofaiss picks ``nprobe`` as the largest value meeting a query-time budget
(10 ms); here the smallest power of two whose recall@k against the exact search reaches ``recall`` (0.95) on
64 probe queries, because recall is the guarantee users ask of the index. The probes are midpoints of random
pairs of stored vectors (normalised): near the data without being stored rows, which would find themselves.
The index is rebuilt when the collection's shards, model or dtype change (a fingerprint in ``DIR/index/*.json``)
or when another ``faiss_key`` or ``recall`` is asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.collection import manifest as mf
from clipkit.collection import shards as sh
from clipkit.collection.config import SearchConfig, memory_bytes
from clipkit.errors import UsageError

FLAT_BELOW = 1_000
POINTS_PER_CLUSTER = 100
PQ_VALUES = (256, 128, 64, 48, 32, 24, 16, 8, 4)
PROBES = 64


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise UsageError("--index faiss needs faiss: pip install 'clipkit[faiss]' (faiss-cpu)") from None
    return faiss


def nb_clusters(n: int) -> int:
    """autofaiss's first choice of IVF cluster count for ``n`` vectors."""
    if n < 1_000_000:
        return 2 ** round(math.log2(4 * math.sqrt(n)))
    if n < 10_000_000:
        return 16_384
    if n < 300_000_000:
        return 65_536
    return 2 ** 17


def index_key(n: int, dim: int, memory: int) -> str:
    """The faiss ``index_factory`` string for ``n`` vectors of ``dim`` under ``memory`` bytes (module docstring)."""
    if n < FLAT_BELOW:
        return "Flat"
    clusters = nb_clusters(n)
    ivf_flat_bytes = n * (4 * dim + 8) + clusters * dim * 4
    if ivf_flat_bytes <= memory:  # flat codes while they fit: recall first (module docstring)
        return f"IVF{clusters},Flat"
    target = 4.0 * n * dim / memory
    candidates = [m for m in PQ_VALUES if m < dim] or [PQ_VALUES[-1]]
    m = next((m for m in candidates if 4 * dim / (m + 8) >= target), candidates[-1])
    y = (min(dim // m, 6) + 1) * m
    coarse = f"IVF{clusters}" if clusters < 1000 else f"IVF{clusters}_HNSW32"
    return f"OPQ{m}_{y},{coarse},PQ{m}x8"


def _clusters_of(key: str) -> int:
    match = re.search(r"IVF(\d+)", key)
    return int(match.group(1)) if match else 0


def _paths(folder: Path, set_name: str) -> tuple[Path, Path]:
    return folder / "index" / f"{set_name}.faiss", folder / "index" / f"{set_name}.json"


def _normalised(chunk: np.ndarray, normalize: bool) -> np.ndarray:
    if normalize:
        return np.ascontiguousarray(chunk, dtype=np.float32)
    rows = np.array(chunk, dtype=np.float32)  # a writable copy: stored chunks may be read-only views
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def _sample(folder: Path, manifest: dict[str, Any], set_name: str, size: int, chunk_size: int,
            seed: int = 0) -> np.ndarray:
    """``size`` stored rows drawn uniformly without replacement (float32, normalised), read chunk by chunk."""
    n = mf.rows(manifest, set_name)
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    parts = []
    for start, chunk in sh.iter_chunks(folder, manifest, set_name, chunk_size):
        inside = chosen[(chosen >= start) & (chosen < start + len(chunk))] - start
        if len(inside):
            parts.append(_normalised(chunk[inside], manifest["normalize"]))
    return np.concatenate(parts)


def build(folder: str | Path, manifest: dict[str, Any], config: SearchConfig, set_name: str = "image",
          quiet: bool = True) -> tuple[Any, dict[str, Any]]:
    """Build, tune and save the index of ``set_name``; returns ``(index, its metadata)``."""
    faiss = _faiss()
    folder = Path(folder)
    started = time.perf_counter()
    n, dim = mf.rows(manifest, set_name), manifest["dim"]
    key = config.faiss_key or index_key(n, dim, memory_bytes(config.index_memory))
    try:
        index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise UsageError(f"--faiss-key {key!r}: faiss cannot build it ({str(exc).strip().splitlines()[-1]})") \
            from None
    if not quiet:
        print(f"building a FAISS {key} index over {n} vectors in {folder / 'index'}", file=sys.stderr)
    sample = None
    if not index.is_trained:
        sample = _sample(folder, manifest, set_name, max(POINTS_PER_CLUSTER * _clusters_of(key), 1000),
                         config.chunk_size)
        index.train(sample)
    for _, chunk in sh.iter_chunks(folder, manifest, set_name, config.chunk_size):
        index.add(_normalised(chunk, manifest["normalize"]))
    nprobe, recall = _tune(faiss, index, folder, manifest, config, set_name, sample)
    meta = {"key": key, "nprobe": nprobe, "recall": recall, "recall_target": config.recall, "k": config.top_k,
            "rows": n, "fingerprint": mf.fingerprint(manifest, set_name), "faiss_key": config.faiss_key,
            "seconds": round(time.perf_counter() - started, 3)}
    index_file, meta_file = _paths(folder, set_name)
    index_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_file.with_name(f".{index_file.name}.{os.getpid()}.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, index_file)
    from clipkit.writers import atomic_write_text

    atomic_write_text(meta_file, json.dumps(meta, indent=1) + "\n")
    return index, meta


def _tune(faiss: Any, index: Any, folder: Path, manifest: dict[str, Any], config: SearchConfig, set_name: str,
          sample: np.ndarray | None) -> tuple[int | None, float]:
    """The smallest power-of-two ``nprobe`` reaching ``config.recall`` recall@k on the probe queries."""
    import torch

    from clipkit.collection.search import exact_search

    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None, 1.0  # no inverted lists (Flat): exact
    pool = sample if sample is not None else _sample(folder, manifest, set_name, 2 * PROBES, config.chunk_size)
    rng = np.random.default_rng(1)
    a, b = rng.integers(len(pool), size=(2, PROBES))
    probes = pool[a] + pool[b]
    probes /= np.maximum(np.linalg.norm(probes, axis=1, keepdims=True), 1e-12)
    k = min(config.top_k, index.ntotal)
    _, truth = exact_search(folder, manifest, torch.from_numpy(probes), k, config.chunk_size, set_name)
    tried: list[tuple[float, int]] = []
    nprobe = 1
    while True:
        ivf.nprobe = nprobe
        _, found = index.search(probes, k)
        recall = float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth, found, strict=True)]))
        tried.append((recall, nprobe))
        if recall >= config.recall or nprobe >= ivf.nlist:
            break
        nprobe = min(2 * nprobe, ivf.nlist)
    recall, nprobe = max(tried, key=lambda t: (t[0], -t[1]))
    ivf.nprobe = nprobe
    return nprobe, recall


def load_or_build(folder: str | Path, manifest: dict[str, Any], config: SearchConfig, set_name: str = "image",
                  quiet: bool = True) -> tuple[Any, dict[str, Any]]:
    """The saved index when it still matches the collection and the options, else a new one (saved)."""
    faiss = _faiss()
    index_file, meta_file = _paths(Path(folder), set_name)
    if index_file.is_file() and meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        same = (meta.get("fingerprint") == mf.fingerprint(manifest, set_name)
                and meta.get("faiss_key") == config.faiss_key and meta.get("recall_target") == config.recall)
        if same:
            index = faiss.read_index(str(index_file))
            if meta.get("nprobe"):
                faiss.extract_index_ivf(index).nprobe = meta["nprobe"]
            return index, {**meta, "reused": True}
    index, meta = build(folder, manifest, config, set_name, quiet)
    return index, {**meta, "reused": False}


def faiss_search(folder: str | Path, manifest: dict[str, Any], queries: np.ndarray, config: SearchConfig,
                 set_name: str = "image", quiet: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(scores [Q, k], row ids [Q, k])`` from the folder's index (built on first use); ids -1 = no hit."""
    index, _ = load_or_build(folder, manifest, config, set_name, quiet)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(config.top_k, index.ntotal))
    return scores, ids.astype(np.int64)
