"""Running a method over many images: decoding ahead, error records, progress on stderr.

``run_over_images`` is the loop every command shares. It expands nothing and writes nothing: it feeds decoded
batches to the method's ``process(batch) -> list[Result]`` and yields results and error records in input order,
while a rich progress bar on stderr (only when stderr is a terminal and not ``quiet``) counts images.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from clipkit.images import Batch, iter_batches
from clipkit.results import ErrorRecord, Result


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
    """A progress context with ``advance(n)``; silent when ``quiet`` or stderr is not a terminal."""
    return _Progress(total, description, quiet) if total else nullcontext(_Progress(0, description, True))


def run_over_images(
    paths: Sequence[str],
    process: Callable[[Batch], Sequence[Result]],
    *,
    transform: Callable | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    keep_image: bool = False,
    quiet: bool = False,
    skip: set[str] | None = None,
    description: str = "images",
) -> Iterator[Result]:
    """Yield ``process``'s results for ``paths`` in order, with an ErrorRecord for each input that failed.

    ``process`` receives a Batch whose successful items have ``pixels`` (``transform`` applied in the decoding
    workers) and, with ``keep_image``, the RGB image; it returns one result per successful item, in order.
    ``skip`` holds paths already done by an interrupted run (``--resume``).
    """
    todo = [p for p in paths if not skip or p not in skip]
    with progress(len(todo), description, quiet) as bar:
        for batch in iter_batches(todo, transform=transform, batch_size=batch_size, workers=workers,
                                  keep_image=keep_image):
            results = iter(process(batch) if batch.ok else ())
            for item in batch.items:
                yield ErrorRecord(item.path, item.error) if item.error is not None else next(results)
            bar.advance(len(batch.items))
