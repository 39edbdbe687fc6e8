"""Webdataset tar shards: list samples once (headers only), read one member on demand (a seek, no extraction).

Grouping follows the ``webdataset`` package (``webdataset.tariterators.base_plus_ext``): a member ``dir/0001.jpg``
has key ``dir/0001`` and extension ``jpg``; consecutive members with one key form a sample. Offsets are those of
the member data in the (decompressed) tar stream: a plain ``.tar`` is read with ``os.pread`` (no shared file
position, so forked decoding workers never race), a compressed one through a per-process decompressing reader that
seeks forward (each worker reads its samples in order, so a shard is decompressed about once per worker).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from clipkit.errors import ImageError


@dataclass(frozen=True)
class TarMember:
    """One webdataset sample's image: member ``name`` of shard ``tar`` at data ``offset`` (``size`` bytes).

    ``name`` None: the sample cannot be read, for ``reason`` (no image member, the shard cannot be listed)."""

    tar: str
    name: str | None
    offset: int = 0
    size: int = 0
    reason: str = ""

    @property
    def origin(self) -> str:
        return f"{self.tar}:{self.name}"

    def open(self) -> IO[bytes]:
        """The member's bytes as a file object; ``ImageError`` when the sample has no readable image."""
        if self.name is None:
            raise ImageError(self.reason)
        try:
            data = _read(self.tar, self.offset, self.size)
        except OSError as exc:
            raise ImageError(f"cannot read {self.name} from {self.tar}: {exc.strerror or exc}") from None
        except EOFError:
            raise ImageError(f"cannot read {self.name} from {self.tar}: the shard is truncated") from None
        if len(data) != self.size:
            raise ImageError(f"cannot read {self.name} from {self.tar}: the shard is truncated")
        return io.BytesIO(data)


def _compression(path: str) -> Any:
    lower = path.lower()
    if lower.endswith((".gz", ".tgz")):
        import gzip

        return gzip.open
    if lower.endswith(".bz2"):
        import bz2

        return bz2.open
    if lower.endswith(".xz"):
        import lzma

        return lzma.open
    return None


_READERS: dict[tuple[int, str], IO[bytes]] = {}  # (pid, shard) → open decompressing reader of this process


def _read(path: str, offset: int, size: int) -> bytes:
    opener = _compression(path)
    if opener is None:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)
    key = (os.getpid(), path)
    reader = _READERS.get(key)
    if reader is None:
        for old in [k for k in _READERS if k[0] != key[0] or len(_READERS) >= 4]:
            _READERS.pop(old).close()  # readers of a parent process (after fork) or beyond four shards
        reader = _READERS[key] = opener(path, "rb")
    reader.seek(offset)  # forward: decompresses the gap; backward: restarts the stream
    return reader.read(size)


def split_name(name: str) -> tuple[str | None, str | None]:
    """``(key, extension)`` of a member name, as webdataset splits it (extension lower-cased)."""
    from webdataset.tariterators import base_plus_ext

    key, ext = base_plus_ext(name)
    return key, ext.lower() if ext is not None else None


def _pick(members: dict[str, tarfile.TarInfo], image_key: str | None) -> tarfile.TarInfo | str:
    """The image member of a sample, or the reason there is none."""
    from clipkit.sources import IMAGE_KEYS

    wanted = [image_key.lower().lstrip(".")] if image_key else list(IMAGE_KEYS)
    for ext in wanted:
        if ext in members:
            return members[ext]
    has = ", ".join(sorted(members)) or "nothing"
    want = f"a .{wanted[0]} member" if image_key else "an image member"
    return f"sample has no image: {want} is missing (it has {has})"


def tar_samples(shard: str, image_key: str | None = None) -> Iterator[tuple[str, TarMember]]:
    """``(key, TarMember)`` per sample of ``shard``, in tar order; key = ``<shard>/<__key__>``.

    A shard that is missing or cannot be listed yields one unreadable sample keyed by the shard itself (an error
    record in the results); a listing cut short by a truncated shard keeps the samples read until then.
    """
    samples: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
    failure = ""
    try:
        with tarfile.open(shard, "r:*") as archive:
            while (info := archive.next()) is not None:
                archive.members.clear()  # headers only: a 100,000-member shard is not kept in memory
                if not info.isfile():
                    continue
                key, ext = split_name(info.name)
                if key is None or ext is None:
                    continue  # webdataset skips names without an extension, and so do we
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1].setdefault(ext, info)
    except FileNotFoundError:
        failure = "no such file"
    except (OSError, tarfile.TarError, EOFError) as exc:
        failure = f"cannot read the tar shard: {exc}"
    for key, members in samples:
        picked = _pick(members, image_key)
        if isinstance(picked, str):
            yield f"{shard}/{key}", TarMember(shard, None, reason=picked)
        else:
            yield f"{shard}/{key}", TarMember(shard, picked.name, picked.offset_data, picked.size)
    if failure and not samples:
        yield shard, TarMember(shard, None, reason=failure)
    elif failure:
        yield f"{shard}/<after {samples[-1][0]}>", TarMember(shard, None, reason=failure)
