"""The manifest of an embedding folder, and every check of a run that needs no model (so no torch).

``DIR/manifest.json``::

    {"format": "clipkit-embeddings", "version": 1, "layout": "parquet" | "clip-retrieval",
     "model": {"spec", "pretrained", "name", "identity", "image_size"},   # identity: name + weights hash
     "dim": 64, "dtype": "float16" | "float32", "normalize": true,
     "sets": {"image": {"shards": [{"files": {"embeddings": "img_emb/img_emb_00000.parquet"}, "rows": 10000}, …]},
              "text": {…}},
     "clipkit": "0.1.0", "created": "…Z", "updated": "…Z"}

Only the shards listed here belong to the collection (:mod:`clipkit.collection.shards`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from clipkit.errors import UsageError
from clipkit.writers import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "clipkit-embeddings"
VERSION = 1
SET_NAMES = ("image", "text")
SHARD_DIRS = ("img_emb", "text_emb", "metadata", "text_metadata")  # the folders of clipkit.collection.shards.SETS
DEFAULT_MODEL = "shapes-clip"  # the registry's default (clipkit.registry.DEFAULT_MODEL), without importing torch


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` (None when there is none); a foreign or broken one is a usage error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a clipkit embedding manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a clipkit embedding manifest (no \"format\": \"{FORMAT}\")")
    return manifest


def require_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an existing collection, or one usage error naming what is missing."""
    if not Path(folder).is_dir():
        raise UsageError(f"{folder} is not a folder (an embedding folder written by 'clipkit embed')")
    manifest = read_manifest(folder)
    if manifest is None:
        raise UsageError(f"{folder} holds no {MANIFEST}: not an embedding folder written by 'clipkit embed'")
    return manifest


def rows(manifest: dict[str, Any], set_name: str = "image") -> int:
    """Rows in the finished shards of ``set_name``."""
    return sum(s["rows"] for s in manifest["sets"].get(set_name, {}).get("shards", []))


def fingerprint(manifest: dict[str, Any], set_name: str = "image") -> str:
    """A hash of what a FAISS index over ``set_name`` depends on (model, dim, dtype, shards and their rows)."""
    shards = manifest["sets"].get(set_name, {}).get("shards", [])
    key = [manifest["model"]["identity"], manifest["dim"], manifest["dtype"], manifest["normalize"], shards]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def model_spec(model: str | None, pretrained: str | None = None) -> dict[str, str | None]:
    """How the manifest names a model spec, without loading it: ``ARCH:TAG`` split, folders made absolute."""
    spec = model or DEFAULT_MODEL
    if pretrained is None and ":" in spec and not spec.startswith(("hf-hub:", "local-dir:")) \
            and not Path(spec).exists():
        spec, _, pretrained = spec.partition(":")
    if Path(spec).expanduser().is_dir():
        spec = str(Path(spec).expanduser().resolve())
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        pretrained = str(Path(pretrained).expanduser().resolve())
    return {"spec": spec, "pretrained": pretrained}


def describe(model: dict[str, Any]) -> str:
    return model["spec"] + (f" -p {model['pretrained']}" if model.get("pretrained") else "")


def check_model_matches(folder: str | Path, manifest: dict[str, Any], model: str | None,
                        pretrained: str | None, what: str) -> None:
    """A usage error when ``model`` (given) is not the manifest's model spec; ``what`` names the command
    (``"search"`` or ``"--resume"``)."""
    if model is None and pretrained is None:
        return
    asked = model_spec(model, pretrained)
    have = manifest["model"]
    if (asked["spec"], asked["pretrained"]) != (have["spec"], have.get("pretrained")):
        fix = ("queries are embedded with the collection's model: leave out -m" if what == "search" else
               "rerun with the same model or another folder")
        raise UsageError(f"{what}: {folder} was embedded with -m {describe(have)}, not -m {describe(asked)}: "
                         f"{fix}")


def check_identity(folder: str | Path, manifest: dict[str, Any], identity: str) -> None:
    """A usage error when the loaded model's weights are not those the collection was embedded with."""
    have = manifest["model"].get("identity")
    if have != identity:
        raise UsageError(f"{folder} was embedded with {describe(manifest['model'])} whose weights were {have}; "
                         f"the model loaded now is {identity}: the weights changed, re-embed the collection")


def new_manifest(model: Any, spec: dict[str, Any], config: Any, dim: int) -> dict[str, Any]:
    """The manifest of a new collection: ``model`` a loaded CLIP (name, identity, image_size), ``spec`` from
    :func:`model_spec`, ``config`` an :class:`~clipkit.collection.config.EmbedConfig`, ``dim`` its width."""
    from clipkit._version import __version__

    return {"format": FORMAT, "version": VERSION, "layout": config.layout,
            "model": {**spec, "name": model.name, "identity": model.identity,
                      "image_size": list(model.image_size)},
            "dim": dim, "dtype": config.dtype, "normalize": config.normalize,
            "sets": {}, "clipkit": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def check_resume(folder: Path, manifest: dict[str, Any] | None, config: Any, resume: bool,
                 model: str | None, pretrained: str | None) -> None:
    """Usage errors of the output folder before any model loads: an existing collection without ``--resume``,
    or ``--resume`` with a model, dtype, normalisation or layout other than the manifest's."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {folder} is a file: name a folder for the embeddings")
    if manifest is None:
        taken = [d for d in SHARD_DIRS if (folder / d).is_dir() and any((folder / d).iterdir())]
        if taken:
            raise UsageError(f"{folder / taken[0]} already holds files but {folder} has no {MANIFEST} (not a "
                             "clipkit embedding folder): write to a new or empty folder")
        return
    if not resume:
        n = sum(rows(manifest, s) for s in SET_NAMES)
        raise UsageError(f"{folder} already holds an embedding collection ({n} rows, {MANIFEST}): add --resume "
                         "to continue it, or write to another folder")
    wanted = {"dtype": config.dtype, "normalize": config.normalize, "layout": config.layout}
    differ = [f"--{k} {manifest.get(k)!s} (this run: {v!s})" for k, v in wanted.items() if manifest.get(k) != v]
    if differ:
        raise UsageError(f"--resume: {folder} was written with {', '.join(differ)}: rerun with the same "
                         "options or another folder")
    check_model_matches(folder, manifest, model or DEFAULT_MODEL, pretrained, "--resume")


def read_texts(path: str | Path) -> list[str]:
    """The texts of ``--texts FILE``: one per line, blank lines skipped, duplicates kept once (first wins)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--texts {path}: cannot read ({exc})") from None
    texts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not texts:
        raise UsageError(f"--texts {path} holds no text (one per line)")
    return texts
