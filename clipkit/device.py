"""Where models run and in which precision.

Resolution order for the device: the explicit argument, then ``$CLIPKIT_DEVICE``, then cuda > mps > cpu.
Precision is applied with autocast (weights stay fp32), which keeps every open_clip model numerically safe on
CPU and lets fp16/bf16 speed up GPUs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from clipkit.errors import UsageError

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return the torch device to use: ``device`` > ``$CLIPKIT_DEVICE`` > cuda > mps > cpu."""
    if isinstance(device, torch.device):
        return device
    name = device or os.environ.get("CLIPKIT_DEVICE") or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available here: use --device cpu")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r} requested but MPS is not available here: use --device cpu")
    return resolved


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """Return ``fp32``, ``fp16`` or ``bf16``; the default is fp32 (fp16 autocast is slow or absent on CPU)."""
    value = (precision or "fp32").lower()
    if value not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if value == "fp16" and device.type == "cpu":
        raise UsageError("fp16 is not supported on the CPU: use --precision bf16 or fp32")
    return value


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A context that runs matrix work in ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


@contextlib.contextmanager
def inference(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast: the context every forward pass of clipkit runs in."""
    with torch.inference_mode(), autocast(device, precision):
        yield


_USER_THREADS: list[int] = []  # set when the user chose a thread count: then clipkit never changes it


def set_threads(threads: int | None) -> None:
    """Set torch's CPU thread count (``None`` keeps torch's default, or ``$CLIPKIT_THREADS``)."""
    value = threads or int(os.environ.get("CLIPKIT_THREADS", "0") or 0)
    if value and value > 0:
        torch.set_num_threads(value)
        _USER_THREADS[:] = [value]


@contextlib.contextmanager
def threads_beside(workers: int) -> Iterator[None]:
    """While ``workers`` decoding processes run, torch uses the cores they leave (at least one), so threads and
    workers together do not oversubscribe the machine; a thread count the user set is kept."""
    if workers < 1 or _USER_THREADS or os.environ.get("CLIPKIT_THREADS"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# glibc's malloc gives a freed block above its mmap threshold back to the kernel at once, and trims the heap's
# free top above its trim threshold; both thresholds start low (128 KiB) and only ratchet up as mmapped blocks are
# freed, to at most 32 and 64 MiB. A forward pass then pays a page fault per 4 KiB of a large activation, again for
# every batch: on group 600-2,200 faults and 3-4 ms an image (bench/README.md, "page faults"). clipkit fixes both at
# that ceiling from the start: blocks up to 32 MiB come from the heap, and up to 64 MiB of free heap is kept.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_ALLOCATOR: list[bool] = []  # set once the allocator was (or could not be) tuned


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed activation memory for reuse (once per process; True if it did).

    A no-op off glibc (macOS, Windows, musl), under ``$CLIPKIT_MALLOC=system``, and where the user already tuned
    malloc (``$MALLOC_MMAP_THRESHOLD_``, ``$MALLOC_TRIM_THRESHOLD_`` or ``$GLIBC_TUNABLES``). Changes no result:
    only where freed memory goes. The process keeps up to :data:`TRIM_THRESHOLD` bytes of freed memory.
    """
    if not _ALLOCATOR:
        _ALLOCATOR.append(_tune_glibc_malloc())
    return _ALLOCATOR[0]


def _tune_glibc_malloc() -> bool:
    user_set = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
    if os.environ.get("CLIPKIT_MALLOC", "").lower() == "system" or any(v in os.environ for v in user_set):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- raises AttributeError off glibc
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return False
    # the mmap threshold first: setting it switches off glibc's own adaptive thresholds
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
