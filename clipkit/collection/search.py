"""``clipkit search``: nearest neighbours of text or image queries in an embedding folder.

Queries are embedded with the collection's own model (the manifest names it; another ``--model`` is refused) and
L2-normalised; scores are cosine similarities. ``index = "exact"`` scores every stored row: the shards are read
``chunk_size`` rows at a time (:func:`clipkit.collection.shards.iter_chunks`), each chunk multiplied with the
``[Q, D]`` queries (torch matmul, float32) and merged into a running top-k, so memory follows the chunk, not the
collection. ``index = "faiss"``: :mod:`clipkit.collection.faiss_index`. Torch is imported only when a search
runs, so the CLI checks queries with this module before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.collection import manifest as mf
from clipkit.collection import shards as sh
from clipkit.collection.config import SearchConfig
from clipkit.errors import UsageError


@dataclass(frozen=True)
class Query:
    """One query: ``kind`` "text" (``value`` the text) or "image" (``value`` a file path)."""

    kind: str
    value: str

    @property
    def label(self) -> str:
        return self.value


def check_queries(texts: list[str] | None, images: list[str] | None) -> list[Query]:
    """The queries in command-line order (texts, then images); usage errors for none, blank or missing ones."""
    queries = [Query("text", t) for t in texts or []] + [Query("image", str(p)) for p in images or []]
    if not queries:
        raise UsageError("give a query: --text 'a red circle' and/or --image FILE (each may repeat)")
    for q in queries:
        if q.kind == "text" and not q.value.strip():
            raise UsageError("--text is empty: give the words to search for")
        if q.kind == "image" and not Path(q.value).is_file():
            raise UsageError(f"--image {q.value}: no such file")
    return queries


def embed_queries(model: Any, queries: list[Query]) -> Any:
    """``[Q, D]`` float32 L2-normalised query embeddings (a torch tensor), in query order (texts raw, without
    templates)."""
    import torch

    from clipkit.collection.embed import encode_images, encode_texts
    from clipkit.errors import ImageError
    from clipkit.images import load_image

    out: list[Any] = [None] * len(queries)
    texts = [i for i, q in enumerate(queries) if q.kind == "text"]
    if texts:
        vectors = encode_texts(model, [queries[i].value for i in texts])
        for i, v in zip(texts, vectors, strict=True):
            out[i] = v
    for i, q in enumerate(queries):
        if q.kind == "image":
            try:
                pixels = model.preprocess(load_image(q.value, short_side=min(model.image_size)))
            except (ImageError, OSError) as exc:
                raise UsageError(f"--image {q.value}: {exc}") from None
            out[i] = encode_images(model, pixels[None])[0]
    return torch.stack([v for v in out if v is not None]).float()


def exact_search(folder: str | Path, manifest: dict[str, Any], queries: Any, k: int,
                 chunk_size: int = 65_536, set_name: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by cosine similarity for each of the ``[Q, D]`` normalised ``queries``.

    Returns ``(scores [Q, k'] float32, row ids [Q, k'] int64)``, best first, ``k' = min(k, rows)``; row ids
    count across the shards in manifest order. ``queries``: a float32 torch tensor.
    """
    import torch
    import torch.nn.functional as F

    best_scores = torch.empty((len(queries), 0))
    best_ids = torch.empty((len(queries), 0), dtype=torch.long)
    for start, chunk in sh.iter_chunks(folder, manifest, set_name, chunk_size):
        rows = torch.from_numpy(np.array(chunk, dtype=np.float32))  # a writable float32 copy of the chunk
        if not manifest["normalize"]:
            rows = F.normalize(rows, dim=-1)
        scores = queries @ rows.T
        top = scores.topk(min(k, scores.shape[1]), dim=1)
        merged = torch.cat([best_scores, top.values], dim=1)
        ids = torch.cat([best_ids, top.indices + start], dim=1)
        keep = merged.topk(min(k, merged.shape[1]), dim=1)
        best_scores, best_ids = keep.values, ids.gather(1, keep.indices)
    return best_scores.numpy(), best_ids.numpy()


def results(folder: str | Path, manifest: dict[str, Any], queries: list[Query], scores: np.ndarray,
            ids: np.ndarray, set_name: str = "image") -> list[dict[str, Any]]:
    """One record per query: ``{"query", "type", "results": [{"path", "score"}, …]}`` (``"text"`` instead of
    ``"path"`` for the text set); ids below 0 (FAISS found fewer than k) are dropped."""
    flat = [int(i) for row in ids for i in row if i >= 0]
    keys = dict(zip(flat, sh.keys_of(folder, manifest, set_name, flat), strict=True))
    name = "path" if set_name == "image" else "text"
    out = []
    for q, row_scores, row_ids in zip(queries, scores, ids, strict=True):
        hits = [{name: keys[int(i)], "score": float(s)} for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
        out.append({"query": q.value, "type": q.kind, "results": hits})
    return out


def search(folder: str | Path, texts: list[str] | None = None, images: list[str] | None = None, *,
           config: SearchConfig | None = None, model: str | None = None, pretrained: str | None = None,
           quiet: bool = True, **options: Any) -> list[dict[str, Any]]:
    """Nearest neighbours in the embedding folder ``folder`` of each text and image query (see the module
    docstring); one record per query, in order (texts, then images). ``options``: fields of
    :class:`SearchConfig` (``top_k=5``, ``index="faiss"``) and the registry's model options (``device`` …)."""
    from clipkit import registry

    cfg = SearchConfig.of(config, **{k: options.pop(k) for k in list(options) if k in SearchConfig.model_fields})
    model_options = options
    manifest = mf.require_manifest(folder)
    queries = check_queries(texts, images)
    mf.check_model_matches(folder, manifest, model, pretrained, "search")
    if mf.rows(manifest, "image") == 0:
        raise UsageError(f"{folder} holds no image embeddings yet")
    have = manifest["model"]
    loaded = registry.load_model(have["spec"], have.get("pretrained"),
                                 **{k: v for k, v in model_options.items() if v is not None})
    mf.check_identity(folder, manifest, loaded.identity)
    vectors = embed_queries(loaded, queries)
    if cfg.index == "faiss":
        from clipkit.collection.faiss_index import faiss_search

        scores, ids = faiss_search(folder, manifest, vectors.numpy(), cfg, quiet=quiet)
    else:
        scores, ids = exact_search(folder, manifest, vectors, cfg.top_k, cfg.chunk_size)
    return results(folder, manifest, queries, scores, ids)
