"""Hugging Face datasets as inputs: ``save_to_disk`` folders (rows read from the memory-mapped Arrow files) and image
folders (``datasets``' ``imagefolder`` builder, whose rows are the image files themselves).

The image column is ``--image-column`` or the first column of type ``datasets.Image``. A cell is read raw
(``{"bytes", "path"}``, undecoded) and decoded by clipkit like any file, so EXIF rotation, draft decoding and error
records are the same as for files; a cell that is not an image is an error record for that row.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from clipkit.errors import ImageError, UsageError


@dataclass(frozen=True)
class DatasetRow:
    """Row ``index`` of the ``save_to_disk`` folder ``root`` (one ``Dataset``), image in ``column``."""

    root: str
    index: int
    column: str

    @property
    def origin(self) -> str:
        return f"{self.root}[{self.index}]"

    def open(self) -> IO[bytes]:
        """The cell's image bytes as a file object; ``ImageError`` when the cell holds no image."""
        cell = _load(self.root).data.slice(self.index, 1).column(self.column).to_pylist()[0]
        if isinstance(cell, dict):
            if cell.get("bytes") is not None:
                return io.BytesIO(cell["bytes"])
            cell = cell.get("path")
        if isinstance(cell, bytes):
            return io.BytesIO(cell)
        if isinstance(cell, str) and cell:
            try:
                return open(cell, "rb")  # the caller closes it
            except OSError as exc:
                raise ImageError(f"cannot read {cell}: {exc.strerror or exc}") from None
        raise ImageError(f"column {self.column!r} holds no image in this row ({type(cell).__name__})")


_DATASETS: dict[tuple[int, str], Any] = {}  # (pid, root) → the memory-mapped Dataset, loaded once per process


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise UsageError("Hugging Face dataset inputs need the datasets package: pip install 'clipkit[hf]'") from None
    datasets.disable_progress_bars()
    return datasets


def _load(root: str) -> Any:
    key = (os.getpid(), root)
    if key not in _DATASETS:
        _DATASETS[key] = _datasets().load_from_disk(root)
    return _DATASETS[key]


def image_column(features: dict[str, Any], wanted: str | None, where: str) -> str:
    """The image column: ``wanted`` (checked), else the first ``datasets.Image`` column."""
    if wanted is not None:
        if wanted not in features:
            raise UsageError(f"{where} has no column {wanted!r} (--image-column): it has {', '.join(features)}")
        return wanted
    image_type = _datasets().Image
    for name, feature in features.items():
        if isinstance(feature, image_type):
            return name
    raise UsageError(f"{where} has no Image column (columns: {', '.join(features)}): name one with --image-column")


def dataset_samples(item: str, wanted: str | None = None) -> Iterator[tuple[str, Any]]:
    """``(key, source)`` per row of the dataset folder ``item`` (see the module docstring)."""
    from clipkit.sources import is_saved_dataset

    folder = Path(item).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{item} is not a folder: a Hugging Face dataset input is a save_to_disk folder or an "
                         "image folder")
    if not is_saved_dataset(folder):
        yield from _imagefolder(item, wanted)
        return
    datasets = _datasets()
    loaded = datasets.load_from_disk(str(folder))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, dataset in splits:
        root = str(folder / split) if split is not None else str(folder)
        column = image_column(dataset.features, wanted, root)
        prefix = f"{item.rstrip('/')}/{split}" if split is not None else item.rstrip("/")
        for index in range(len(dataset)):
            yield f"{prefix}/{index}", DatasetRow(root, index, column)


def _imagefolder(item: str, wanted: str | None) -> Iterator[tuple[str, str]]:
    """Rows of ``datasets.load_dataset("imagefolder")``: each is an image file, keyed by its path under ``item``."""
    loaded = _datasets().load_dataset("imagefolder", data_dir=item)
    base = os.path.abspath(item)
    for split, dataset in loaded.items():
        column = image_column(dataset.features, wanted, f"{item} [{split}]")
        for cell in dataset.data.column(column).to_pylist():
            path = cell.get("path") if isinstance(cell, dict) else cell
            if isinstance(path, str):
                key = os.path.join(item, os.path.relpath(path, base))
                yield key, key
