"""The one runner: inputs → decoded batches → a predictor → results and error records, in input order.

It is the only code that knows about inputs (paths, folders, globs, ``-``, ``--files-from``, webdataset shards
and Hugging Face datasets (:mod:`clipkit.sources`), and in-memory PIL images, HWC uint8 arrays or CHW tensors),
decoding workers, batches, error records, progress, resume and ``--shard`` (:mod:`clipkit.sharding`). Every
method (:mod:`clipkit.methods`) gets the same behaviour from it; ``--engine ray`` (:mod:`clipkit.engines.ray`)
runs the same decode and the same per-result steps on Ray Data:

* naming: a file input is named by its path as given (after folder/glob expansion); a dataset sample by
  ``<shard>/<key>`` or ``<dataset folder>[/<split>]/<row>``; an in-memory item by ``<image i>``, ``i`` being its
  index in the caller's list; errors use the same names;
* an input that cannot be decoded, or on which the predictor fails, becomes an :class:`ErrorRecord`; the others
  in its batch are retried one by one, so one bad file never costs another its result;
* ``skip`` (``--resume``) holds keys already done; they are not decoded again. A file counts as done when its
  key or its resolved path matches (``a/x.png``, ``./a/x.png`` and ``/abs/a/x.png`` are one input);
* a progress bar on stderr (when it is a terminal and not ``quiet``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipkit.errors import ClipkitError
from clipkit.images import ORIGINAL_SIZE, as_pil, decode_image, default_workers, expand_inputs, load_image
from clipkit.methods import Predictor, Sample
from clipkit.results import ErrorRecord
from clipkit.sources import is_dataset_source


@dataclass(frozen=True)
class Input:
    """One input: ``key`` (its name in results) and ``source`` (a path string, a dataset sample record of
    :mod:`clipkit.sources`, or the in-memory object)."""

    key: str
    source: Any

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, str)

    @property
    def portable(self) -> bool:
        """Whether another process can read it from ``source`` alone (a file or a dataset sample)."""
        return self.is_file or is_dataset_source(self.source)


def collect_inputs(images: Any, files_from: str | Path | None = None, *, input_format: str | None = None,
                   image_column: str | None = None, shard: str | tuple[int, int] | None = None) -> list[Input]:
    """Inputs from a path, folder, glob, ``-``, a webdataset shard, a Hugging Face dataset folder, a PIL image /
    array / tensor, or a list mixing them.

    Strings and ``os.PathLike`` objects are expanded (folders recursively, globs, ``-`` = paths on stdin); a
    missing file stays an input and becomes an error record when read. ``input_format``: ``auto`` (a ``.tar`` is a
    webdataset shard, a ``save_to_disk`` folder a dataset), ``files``, ``webdataset`` or ``hf``
    (:mod:`clipkit.sources`); ``image_column``: the dataset column / shard member extension holding the image.
    ``shard``: ``"i/N"`` keeps the i-th of N hash partitions of the inputs (:mod:`clipkit.sharding`).
    """
    from clipkit import sources
    from clipkit.sharding import parse_shard, select

    fmt = sources.check_format(input_format)
    part = parse_shard(shard)
    items = list(images) if isinstance(images, list | tuple) else ([] if images is None else [images])
    out: list[Input] = []

    def add_paths(paths: list[str]) -> None:
        for p in paths:
            if fmt != "files" and sources.is_tar(p):
                out.extend(Input(k, s) for k, s in sources.expand(p, "webdataset", image_column))
            else:
                out.append(Input(p, p))

    for index, item in enumerate(items):
        if isinstance(item, Input):
            out.append(item)
        elif isinstance(item, str) or hasattr(item, "__fspath__"):
            reader = sources.claims(str(item), fmt) if str(item) != "-" else None
            if reader is not None:
                out.extend(Input(k, s) for k, s in sources.expand(str(item), reader, image_column))
            else:
                add_paths(expand_inputs([str(item)], allow_empty=True))
        else:
            out.append(Input(f"<image {index}>", item))
    if files_from is not None:
        add_paths(expand_inputs([], files_from, allow_empty=True))
    keys = list(dict.fromkeys(i.key for i in out))
    if not keys:
        expand_inputs([])  # raises the one "no input images" usage error
    by_key = {i.key: i for i in out}
    return select((by_key[k] for k in keys), part)


def resolved(key: str) -> str:
    """The resolved form of a file key (symlinks and ``..`` followed), as resume compares them."""
    return os.path.realpath(key)


def _done(item: Input, skip: set[str]) -> bool:
    return item.key in skip or (item.portable and resolved(item.key) in skip)


def pending(items: Sequence[Input], skip: set[str] | None) -> list[Input]:
    """The items not done yet (``skip``: keys of a resumed run's results)."""
    return [i for i in items if not skip or not _done(i, skip)]


def decode(item: Input, max_side: int | None = None, short_side: int | None = None) -> Any:
    """The RGB ``PIL.Image`` of an input (``ImageError``/``ValueError`` with a one-line reason on failure);
    JPEG files are decoded at a reduced DCT scale when ``max_side`` allows (:func:`load_image`)."""
    if item.is_file:
        return load_image(item.source, max_side, short_side)
    source = item.source
    if is_dataset_source(source):
        with source.open() as stream:
            return decode_image(stream, max_side, short_side)
    if hasattr(source, "detach") and hasattr(source, "permute"):  # a CHW tensor, float in [0, 1] or uint8
        import numpy as np
        import torch

        array = source.detach().cpu()
        if array.is_floating_point():
            array = (array.clamp(0, 1) * 255).round()
        source = np.ascontiguousarray(array.to(torch.uint8).permute(1, 2, 0).numpy())
        if source.shape[2] == 1:
            source = source[:, :, 0]
    return as_pil(source)


MAX_ASPECT = 32  # longer:shorter side beyond which an image is refused (resized grids would explode)


def fit(image: Any, max_side: int | None) -> Any:
    """``image`` downscaled so that its longer side is at most ``max_side`` (unchanged when it already is);
    an aspect ratio beyond :data:`MAX_ASPECT` is an ``ImageError``."""
    from PIL import Image

    from clipkit.errors import ImageError

    w, h = image.size
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"image is {w}x{h} px: aspect ratio beyond {MAX_ASPECT}:1 (a strip this thin would make "
                         "the model's resized grids explode)")
    if max_side is None or max(w, h) <= max_side:
        return image
    scale = max_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                        reducing_gap=3.0)


class _Decoded:
    """A map-style dataset (duck-typed for DataLoader): input i → a Sample, or an ErrorRecord; never raises."""

    def __init__(self, items: Sequence[Input], transform: Any, keep_image: bool, max_side: int | None = None,
                 short_side: int | None = None):
        self.items, self.transform, self.keep_image = list(items), transform, keep_image
        self.max_side, self.short_side = max_side, short_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample | ErrorRecord:
        item = self.items[index]
        try:
            image = decode(item, self.max_side, self.short_side)
            size = image.info.get(ORIGINAL_SIZE, image.size)
            image = fit(image, self.max_side)
        except (ClipkitError, OSError, ValueError, TypeError) as exc:
            return ErrorRecord(item.key, str(exc) or type(exc).__name__)
        try:
            pixels = self.transform(image) if self.transform is not None else None
        except Exception as exc:  # a broken transform on one odd image must not stop the run
            return ErrorRecord(item.key, f"cannot preprocess image: {exc}")
        return Sample(item.key, image if self.keep_image else None, pixels, size=size)


def _worker_init(_: int) -> None:
    """Decoding workers die with their parent and stay quiet: on Linux the kernel kills a worker when the main
    process dies (``PR_SET_PDEATHSIG``), so a killed run leaves no worker holding memory or printing a
    ``ConnectionResetError`` traceback; Ctrl-C is the main process's to handle."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(0)


def _collate(samples: list[Sample | ErrorRecord]) -> list[Sample | ErrorRecord]:
    """The batch as it is, except that same-shape pixel tensors become views of one stacked tensor: a decoding
    worker then hands the main process one shared-memory block per batch, not one per image."""
    import torch

    pixels = [s.pixels for s in samples if isinstance(s, Sample)]
    if len(pixels) > 1 and all(isinstance(p, torch.Tensor) and p.shape == pixels[0].shape for p in pixels):
        stacked = iter(torch.stack(pixels))
        for s in samples:
            if isinstance(s, Sample):
                s.pixels = next(stacked)
    return samples


def _batches(items: Sequence[Input], transform: Any, keep_image: bool, batch_size: int,
             workers: int | None, max_side: int | None = None, short_side: int | None = None,
             share_cores: bool = False) -> Iterator[list[Sample | ErrorRecord]]:
    from torch.utils.data import DataLoader

    from clipkit.device import threads_beside

    in_memory = any(not i.portable for i in items)
    n_workers = 0 if in_memory else default_workers(len(items), batch_size) if workers is None else workers
    with threads_beside(n_workers if share_cores else 0):
        yield from DataLoader(_Decoded(items, transform, keep_image, max_side, short_side),  # type: ignore[arg-type]
                          batch_size=batch_size, num_workers=n_workers, collate_fn=_collate,
                          prefetch_factor=4 if n_workers else None, persistent_workers=False,
                          worker_init_fn=_worker_init if n_workers else None)


def _message(exc: BaseException) -> str:
    if isinstance(exc, ClipkitError | OSError):
        return str(exc) or type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _predict(predictor: Predictor, samples: list[Sample]) -> list[Any]:
    """Results for ``samples``; if the batch fails, each sample alone, so only the bad ones become errors."""
    try:
        results = list(predictor.predict(samples))
        if len(results) != len(samples):
            raise RuntimeError(f"predictor returned {len(results)} results for {len(samples)} images")
        return results
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if len(samples) == 1:
            return [ErrorRecord(samples[0].key, _message(exc))]
    return [r for s in samples for r in _predict(predictor, [s])]


def run(predictor: Predictor, items: Sequence[Input], *, batch_size: int = 1, workers: int | None = None,
        keep_image: bool = False, quiet: bool = True, skip: set[str] | None = None,
        description: str = "images", on_result: Any = None, max_side: int | None = None) -> Iterator[Any]:
    """Yield one result (or ErrorRecord) per input not in ``skip``, in input order.

    ``keep_image``: ship the decoded image even when the predictor does not need it (the artefact writer
    draws on it). ``on_result(result, sample)`` is called for each successful result before it is yielded
    (artefacts are written there, from the image already decoded). ``max_side``: the working resolution —
    a longer image is downscaled before the predictor (peak memory follows the setting, not the input) and its
    result mapped back to the original size (``result.rescaled(size)``: boxes scaled, label maps resized).
    """
    if batch_size < 1:
        from clipkit.errors import UsageError

        raise UsageError("--batch-size must be at least 1")
    from clipkit.device import keep_freed_memory

    keep_freed_memory()
    todo = pending(items, skip)
    keep = keep_image or predictor.keep_image
    with progress(len(todo), description, quiet) as bar:
        # a predictor that needs only a small input (``decode_short_side``) gets JPEGs decoded at reduced size,
        # unless the image itself is wanted (artefacts are drawn at the working resolution)
        short = None if keep else getattr(predictor, "decode_short_side", None)
        # a decode-bound predictor (a small model) leaves the decoding workers their cores; a large one is
        # compute-bound and keeps every thread (measured: bench/README.md, "threads beside the workers")
        share = bool(getattr(predictor, "decode_bound", False))
        for batch in _batches(todo, predictor.transform, keep, batch_size, workers, max_side, short, share):
            for entry, result in predict_batch(predictor, batch):
                yield deliver(result, entry, on_result)
            bar.advance(len(batch))


def predict_batch(predictor: Predictor, batch: list[Sample | ErrorRecord]) -> list[tuple[Any, Any]]:
    """``(entry, result)`` per entry of a decoded batch: the predictor's result mapped back to the original size,
    or the entry's own ``ErrorRecord`` (both engines call this on each batch)."""
    ok = [s for s in batch if isinstance(s, Sample)]
    results = iter(_predict(predictor, ok) if ok else ())
    out = []
    for entry in batch:
        if isinstance(entry, ErrorRecord):
            out.append((entry, entry))
            continue
        result = next(results)
        if hasattr(result, "rescaled") and entry.image is not None and entry.image.size != entry.size:
            result = result.rescaled(entry.size)
        out.append((entry, result))
    return out


def deliver(result: Any, entry: Any, on_result: Any = None) -> Any:
    """The result as yielded: ``on_result(result, sample)`` called first (artefacts; a failed write becomes an
    ``ErrorRecord``), then the sample's image and pixels freed."""
    if on_result is not None and isinstance(entry, Sample) and not isinstance(result, ErrorRecord):
        try:
            on_result(result, entry)
        except OSError as exc:
            result = ErrorRecord(entry.key, f"cannot write artefacts: {exc}")
    if isinstance(entry, Sample):
        entry.image = entry.pixels = None  # free the batch's memory as results stream out
    return result


class _Progress:
    """A rich progress bar on stderr, or nothing (``quiet``, or stderr is not a terminal)."""

    def __init__(self, total: int, description: str, quiet: bool):
        self.bar: Any = None
        if not quiet and total > 1 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                transient=False)
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def progress(total: int, description: str = "images", quiet: bool = False) -> AbstractContextManager[_Progress]:
    """A progress context with ``advance(n)`` on stderr; silent when ``quiet`` or stderr is not a terminal.

    Every long loop (world export, training, evaluation) uses this one bar.
    """
    return _Progress(total, description, quiet) if total else nullcontext(_Progress(0, description, True))
