"""Options of ``clipkit embed`` and ``clipkit search`` as validated configs (no torch, no pyarrow, no faiss).

Every default lives here; the CLI builds its options from these fields (:mod:`clipkit.cli.collection`), so the
help, the library and the command line agree.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from clipkit.config import MethodConfig, option

EMBED = "Embed"
SEARCH = "Search"
FAISS = "FAISS index"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.IGNORECASE)


def memory_bytes(text: str) -> int:
    """``"4G"`` → 4 * 2**30 (K, M, G, T suffixes, as autofaiss writes memory budgets); ValueError otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a memory size such as 512M or 4G")
    return int(float(match.group(1)) * 1024 ** "BKMGT".index((match.group(2) or "B").upper()))


class EmbedConfig(MethodConfig):
    """``clipkit embed``: how embeddings are computed and stored (:mod:`clipkit.collection.embed`)."""

    normalize: bool = option(True, "L2-normalise every embedding (as clip-retrieval does; search scores are "
                                   "cosine similarities either way).", panel=EMBED)
    dtype: Literal["float16", "float32"] = option("float16", "Stored precision of the embeddings.", panel=EMBED)
    shard_size: int = option(10_000, "Rows per shard: each shard is written whole (temporary file + rename) once "
                                     "full, so an interrupted run loses at most one shard's work.", ge=1,
                             panel=EMBED)
    layout: Literal["parquet", "clip-retrieval"] = option(
        "parquet", "parquet: one parquet file per shard with image_path, width, height and the embedding column; "
                   "clip-retrieval: img_emb/img_emb_N.npy + metadata/metadata_N.parquet as clip-retrieval writes "
                   "them (docs/collection.md).", panel=EMBED)
    text_batch_size: int = option(256, "Texts per forward pass for --texts.", ge=1, cli=False)


class SearchConfig(MethodConfig):
    """``clipkit search``: nearest neighbours over an embedding folder (:mod:`clipkit.collection.search`)."""

    top_k: int = option(10, "Number of neighbours per query.", short="-k", ge=1, panel=SEARCH)
    index: Literal["exact", "faiss"] = option(
        "exact", "exact: chunked matrix product over every shard (no index, exact top-k); faiss: build (once, "
                 "kept in DIR/index/) and query a FAISS index chosen by collection size as autofaiss does.",
        panel=SEARCH)
    chunk_size: int = option(65_536, "Rows read and scored at a time by the exact search (memory bound).", ge=1,
                             panel=SEARCH)
    faiss_key: str | None = option(None, "A faiss index_factory string to build instead of the automatic choice "
                                         "(e.g. 'IVF256,Flat').", panel=FAISS)
    recall: float = option(0.95, "Recall@k against the exact search that the FAISS index is tuned for (nprobe, "
                                 "chosen when the index is built).", gt=0.0, le=1.0, panel=FAISS)
    index_memory: str = option("4G", "Memory budget of the FAISS index: an IVF-Flat index larger than this is "
                                     "product-quantised (autofaiss's max_index_memory_usage).", panel=FAISS)

    @field_validator("index_memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        memory_bytes(value)
        return value
