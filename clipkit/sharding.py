"""``--shard i/N``: a deterministic partition of the inputs by a hash of each input's key.

An input belongs to shard ``int(sha1(normpath(key))[:16], 16) % N``: which shard takes an input depends on its key
alone — not on the order, the number or the other inputs — so N processes (or machines) given the same inputs in
any order split them into N disjoint parts whose union is every input, and their outputs merge by concatenation
(``cat part-*.jsonl``). Keys are compared as given (``./a.png`` and ``a.png`` are one key; ``/abs/a.png`` is
another), so give every process the same paths. Shards hold about ``len(inputs) / N`` inputs each (a hash, not a
count: with few inputs they can be uneven).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from typing import TypeVar

from clipkit.errors import UsageError

T = TypeVar("T")
_SYNTAX = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/N"`` (0 ≤ i < N) → ``(i, N)``; None stays None; anything else is a one-line ``UsageError``."""
    if spec is None:
        return None
    if isinstance(spec, tuple):
        index, count = spec
    else:
        match = _SYNTAX.fullmatch(str(spec))
        if not match:
            raise UsageError(f"--shard {spec!r}: use i/N, e.g. --shard 0/4 (the first of four parts)")
        index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {index}/{count}: i must be in 0..N-1 and N at least 1")
    return index, count


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) that the input ``key`` belongs to."""
    digest = hashlib.sha1(os.path.normpath(key).encode("utf-8", "surrogateescape")).hexdigest()
    return int(digest[:16], 16) % count


def select(items: Iterable[T], shard: tuple[int, int] | None, key: str = "key") -> list[T]:
    """The items (objects with attribute ``key``) of ``shard`` = ``(i, N)``, in their order; all when None."""
    items = list(items)
    if shard is None:
        return items
    index, count = shard
    return [item for item in items if shard_of(getattr(item, key), count) == index]
