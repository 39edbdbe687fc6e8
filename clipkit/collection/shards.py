"""The embedding folder: shards on disk, the manifest that lists them, resume and reading in chunks.

Layout of ``DIR`` (``layout = "parquet"``, the default)::

    manifest.json                 model identity, dim, dtype, normalize, layout, the finished shards (rows each)
    img_emb/img_emb_00000.parquet image_path (string), width, height (int32), embedding (fixed_size_list<D>)
    text_emb/text_emb_00000.parquet  caption (string), embedding           (--texts)
    errors.jsonl                  {"path", "error"} per input that failed in the last run

``layout = "clip-retrieval"`` writes what ``clip-retrieval inference`` writes: ``img_emb/img_emb_N.npy``
(``[n, D]``) beside ``metadata/metadata_N.parquet`` (image_path, width, height), and for texts
``text_emb/text_emb_N.npy`` beside ``text_metadata/metadata_N.parquet`` (caption); autofaiss and clip-retrieval's
index/back read them as they are. Row ``i`` of an npy file is row ``i`` of its metadata file.

Every shard is written to a temporary name and renamed; the manifest (rewritten atomically after each shard) is
the commit point: a shard file the manifest does not list (a run killed between the two) is deleted when the
folder is next opened, so ``pandas.read_parquet(DIR/img_emb)`` never sees a row twice. The folder is locked
(``flock`` on ``DIR/.lock``) while a run writes it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipkit.collection.manifest import write_manifest
from clipkit.errors import UsageError
from clipkit.writers import atomic_write_bytes

ERRORS = "errors.jsonl"
# the names this module writes (shards, and atomic_write_bytes's temporaries of them): only these are ever deleted
_OURS = re.compile(r"^\.?(img_emb|text_emb|metadata)_\d{5}\.(parquet|npy)(\..+\.tmp)?$")


@dataclass(frozen=True)
class SetLayout:
    """Where one embedding set (``image`` or ``text``) lives: folders, file stems and its key column."""

    name: str  # "image" | "text"
    emb_dir: str  # img_emb | text_emb
    meta_dir: str  # metadata | text_metadata (clip-retrieval layout only)
    key: str  # image_path | caption
    extra: tuple[str, ...]  # further int32 columns

    def files(self, index: int, layout: str) -> dict[str, str]:
        """Relative file names of shard ``index``: ``{"embeddings": …}`` plus ``"metadata"`` for clip-retrieval."""
        stem = f"{self.emb_dir}/{self.emb_dir}_{index:05d}"
        if layout == "parquet":
            return {"embeddings": stem + ".parquet"}
        return {"embeddings": stem + ".npy", "metadata": f"{self.meta_dir}/metadata_{index:05d}.parquet"}


SETS = {"image": SetLayout("image", "img_emb", "metadata", "image_path", ("width", "height")),
        "text": SetLayout("text", "text_emb", "text_metadata", "caption", ())}


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is the `parquet` extra
        raise UsageError("embedding folders need pyarrow: pip install 'clipkit[parquet]'") from None
    return pa, pq


def lock(folder: Path) -> Any:
    """Hold ``DIR/.lock`` for the run (a second writer gets a usage error); close the returned file to release."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")  # noqa: SIM115 (kept open for the whole run)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"{folder} is being written by another clipkit run (its .lock is held): wait for it or "
                         "pick another folder") from None
    return handle


def remove_strays(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """Delete shard files (and temporaries) that the manifest does not list; returns what was deleted."""
    listed = {f for s in manifest["sets"].values() for shard in s["shards"] for f in shard["files"].values()}
    removed = []
    for layout in SETS.values():
        for sub in (layout.emb_dir, layout.meta_dir):
            if not (folder / sub).is_dir():
                continue
            for path in (folder / sub).iterdir():
                name = f"{sub}/{path.name}"
                if path.is_file() and name not in listed and _OURS.match(path.name):
                    path.unlink()
                    removed.append(path)
    return removed


def done_keys(folder: Path, manifest: dict[str, Any], set_name: str) -> list[str]:
    """The key column (image_path or caption) of every finished shard of ``set_name``."""
    return [k for shard in manifest["sets"].get(set_name, {}).get("shards", [])
            for k in read_keys(folder, manifest, set_name, shard)]


def read_keys(folder: Path, manifest: dict[str, Any], set_name: str, shard: dict[str, Any]) -> list[str]:
    """The key column of one shard, in row order."""
    _, pq = _arrow()
    layout = SETS[set_name]
    name = shard["files"].get("metadata", shard["files"]["embeddings"])
    return pq.read_table(folder / name, columns=[layout.key]).column(0).to_pylist()


@dataclass
class ShardWriter:
    """Buffers rows of one set and writes a shard each ``shard_size`` rows (and at ``close``).

    ``add(key, vector, **extra)``: ``vector`` is ``[D]`` float; it is stored in the manifest's dtype.
    """

    folder: Path
    manifest: dict[str, Any]
    set_name: str
    shard_size: int
    written: int = 0
    _keys: list[str] = field(default_factory=list)
    _vectors: list[np.ndarray] = field(default_factory=list)
    _extra: dict[str, list[int]] = field(default_factory=dict)

    def add(self, key: str, vector: np.ndarray, **extra: int) -> None:
        self._keys.append(key)
        self._vectors.append(np.asarray(vector, dtype=self.manifest["dtype"]))
        for name in SETS[self.set_name].extra:
            self._extra.setdefault(name, []).append(int(extra[name]))
        if len(self._keys) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next shard, then list it in the manifest (the commit point)."""
        if not self._keys:
            return
        entry = self.manifest["sets"].setdefault(self.set_name, {"shards": []})
        index = len(entry["shards"])
        files = SETS[self.set_name].files(index, self.manifest["layout"])
        matrix = np.stack(self._vectors)
        _write_shard(self.folder, files, SETS[self.set_name], self._keys, self._extra, matrix, self.manifest)
        entry["shards"].append({"files": files, "rows": len(self._keys)})
        write_manifest(self.folder, self.manifest)
        self.written += len(self._keys)
        self._keys, self._vectors, self._extra = [], [], {}


def _write_shard(folder: Path, files: dict[str, str], layout: SetLayout, keys: list[str],
                 extra: dict[str, list[int]], matrix: np.ndarray, manifest: dict[str, Any]) -> None:
    pa, pq = _arrow()
    columns: dict[str, Any] = {layout.key: pa.array(keys, pa.string())}
    columns.update({name: pa.array(extra[name], pa.int32()) for name in layout.extra})
    if "metadata" in files:  # clip-retrieval: the matrix as .npy, the rest as parquet
        buffer = io.BytesIO()
        np.save(buffer, matrix)
        atomic_write_bytes(folder / files["embeddings"], buffer.getvalue())
        target = files["metadata"]
    else:
        flat = pa.array(matrix.reshape(-1), pa.float16() if matrix.dtype == np.float16 else pa.float32())
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
        target = files["embeddings"]
    table = pa.table(columns).replace_schema_metadata({
        "clipkit": json.dumps({k: manifest[k] for k in ("model", "dim", "dtype", "normalize")})})
    buffer = io.BytesIO()
    # no dictionary encoding for the embedding column: it never repeats, and decoding a dictionary-encoded
    # float16 column was 4x slower to read (14 vs 3.2 ms per 10,000 x 64 rows, bench/README.md)
    pq.write_table(table, buffer, row_group_size=8192, use_dictionary=[layout.key])
    atomic_write_bytes(folder / target, buffer.getvalue())


def iter_chunks(folder: str | Path, manifest: dict[str, Any], set_name: str = "image",
                chunk_size: int = 65_536) -> Iterator[tuple[int, np.ndarray]]:
    """``(first global row, [m, D] array)`` over every finished shard, at most ``chunk_size`` rows at a time.

    Arrays are in the stored dtype (float16 or float32); npy shards are memory-mapped, parquet shards read by
    record batch, so memory follows ``chunk_size``, not the collection.
    """
    _, pq = _arrow()
    folder = Path(folder)
    start, dim = 0, manifest["dim"]
    for shard in manifest["sets"].get(set_name, {}).get("shards", []):
        path = folder / shard["files"]["embeddings"]
        if path.suffix == ".npy":
            matrix = np.load(path, mmap_mode="r")
            for i in range(0, len(matrix), chunk_size):
                yield start + i, np.asarray(matrix[i:i + chunk_size])
        else:
            offset = 0
            # one thread: the one column gains nothing from pyarrow's pool (43 vs 48 CPU-ms per 100,000 x 64 rows)
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size, columns=["embedding"],
                                                            use_threads=False):
                values = batch.column(0).values.to_numpy(zero_copy_only=False).reshape(-1, dim)
                yield start + offset, values
                offset += len(values)
        start += shard["rows"]


def keys_of(folder: str | Path, manifest: dict[str, Any], set_name: str, row_ids: list[int]) -> list[str]:
    """The key (image_path or caption) of each global row id, reading only the shards that hold them."""
    folder = Path(folder)
    out: dict[int, str] = {}
    start = 0
    wanted = sorted(set(row_ids))
    for shard in manifest["sets"].get(set_name, {}).get("shards", []):
        inside = [r for r in wanted if start <= r < start + shard["rows"]]
        if inside:
            keys = read_keys(folder, manifest, set_name, shard)
            out.update({r: keys[r - start] for r in inside})
        start += shard["rows"]
    return [out[r] for r in row_ids]


class ErrorLog:
    """``DIR/errors.jsonl``: one ``{"path", "error"}`` line per input that failed in this run, appended and flushed
    as failures happen (an interrupted run keeps them); emptied when a run starts (``--resume`` retries failed
    inputs), removed at ``close`` when nothing failed."""

    def __init__(self, folder: Path):
        self.path = folder / ERRORS
        self.count = 0
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def add(self, record: dict[str, str]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        self._file.close()
        if not self.count:
            self.path.unlink(missing_ok=True)
