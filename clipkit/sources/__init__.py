"""Dataset inputs: webdataset tar shards and Hugging Face datasets, as (key, source) pairs for the runner.

Besides image files, folders and globs (:func:`clipkit.images.expand_inputs`), an input may be

* a **webdataset shard** (``.tar``, also ``.tar.gz``/``.tgz``/``.tar.bz2``/``.tar.xz``), a brace pattern of
  shards (``data/{00000..00099}.tar``), or with ``--input-format webdataset`` a folder of shards. Members are
  grouped into samples as the ``webdataset`` package groups them (key = the member name up to the first dot of
  its base name, extension = the rest, lower-cased); the image is the member with extension ``--image-column``
  (clip-retrieval's ``--wds_image_key``, e.g. ``jpg``), by default the first present of
  :data:`IMAGE_KEYS`. A sample's key is ``<shard as given>/<__key__>`` (``data/00000.tar/000000012``); a
  sample with no image member, and a shard that cannot be listed, become error records;
* a **Hugging Face dataset**: a ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict``, all splits in order,
  or one split's sub-folder), keyed ``<folder>/<split>/<row index>`` (``<folder>/<row index>`` for a plain
  ``Dataset``); or with ``--input-format hf`` an image folder read by ``datasets``' ``imagefolder`` builder, keyed by
  the image files' paths (the same keys as giving the folder as files). The image is the column
  ``--image-column``, by default the first column of type ``Image``.

Nothing is extracted to disk: a shard is listed once (its headers, no image data), and each sample is read at
decoding time by seeking to its member (:mod:`clipkit.sources.tars`); dataset rows are read from the memory-mapped
Arrow files (:mod:`clipkit.sources.hf`). Sources are small picklable records, so decoding workers (and Ray
tasks) read them independently.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clipkit.errors import UsageError

INPUT_FORMATS = ("auto", "files", "webdataset", "hf")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# the member extensions read as images, in order of preference (open_clip's and clip-retrieval's keys first)
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "ppm", "jfif", "avif", "heic", "heif")
_BRACES = re.compile(r"\{[^{}]*(\.\.|,)[^{}]*\}")


def check_format(input_format: str | None) -> str:
    """``input_format`` (None = auto), validated."""
    fmt = input_format or "auto"
    if fmt not in INPUT_FORMATS:
        raise UsageError(f"unknown --input-format {fmt!r}: use one of {', '.join(INPUT_FORMATS)}")
    return fmt


def is_tar(path: str) -> bool:
    """Whether ``path`` names a tar shard (by its suffix)."""
    return path.lower().endswith(TAR_SUFFIXES)


def is_saved_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    folder = Path(path)
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def shard_paths(item: str) -> list[str]:
    """The shards an argument names: a brace pattern (``{00000..00009}``, ``{a,b}``), a glob, a folder (its tar
    files, recursively, sorted) or one path."""
    if _BRACES.search(item):
        import braceexpand  # a dependency of webdataset

        return [p for pattern in braceexpand.braceexpand(item) for p in shard_paths(pattern)]
    path = Path(item).expanduser()
    if path.is_dir():
        return [str(p) for p in sorted(path.rglob("*")) if is_tar(p.name) and not p.is_dir()]
    if not path.exists() and any(ch in item for ch in "*?["):
        return sorted(p for p in glob.glob(item, recursive=True) if is_tar(p))
    return [item]


def claims(item: str, input_format: str) -> str | None:
    """Which dataset reader takes the argument ``item`` as a whole (``"webdataset"``, ``"hf"``), or None when it
    is expanded as files (a tar found that way is still read as a shard unless ``--input-format files``)."""
    if input_format == "files":
        return None
    if input_format == "hf" or (input_format == "auto" and is_saved_dataset(item)):
        return "hf"
    if input_format == "webdataset" or (_BRACES.search(item) and is_tar(item)):
        return "webdataset"
    return None


def expand(item: str, reader: str, image_column: str | None = None) -> Iterator[tuple[str, Any]]:
    """``(key, source)`` for every sample of the dataset argument ``item`` read by ``reader``."""
    if reader == "hf":
        from clipkit.sources.hf import dataset_samples

        yield from dataset_samples(item, image_column)
        return
    from clipkit.sources.tars import tar_samples

    shards = shard_paths(item)
    if not shards:
        raise UsageError(f"{item}: no tar shards found (webdataset input)")
    for shard in shards:
        yield from tar_samples(shard, image_column)


def is_dataset_source(source: Any) -> bool:
    """Whether ``source`` is a dataset sample record (``open()`` gives its image bytes; picklable)."""
    return callable(getattr(source, "open", None)) and hasattr(source, "origin")
