"""The image source: input expansion and robust decoding (the runner batches them in worker processes).

Inputs are files, directories (recursive, by extension), glob patterns, ``-`` (paths on stdin) and
``--files-from FILE``. Every decoded image is RGB ``PIL.Image``: EXIF orientation applied, alpha composited on
white, 16-bit and float modes scaled to 8 bits. A file that fails to decode raises ``ImageError`` with a one-line
reason, which the runner turns into an error record; the run goes on.
"""

from __future__ import annotations

import glob
import math
import os
import stat
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipkit.errors import ImageError, UsageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif", ".heic",
     ".heif", ".avif"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
ORIGINAL_SIZE = "clipkit_original_size"  # image.info key: (W, H) of a file decoded at reduced size (draft)
# Pillow's own limit (~89 Mpx warns, twice that raises); clipkit turns the warning into a per-file error too.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def expand_inputs(inputs: Sequence[str], files_from: str | Path | None = None, *,
                  allow_empty: bool = False) -> list[str]:
    """Expand files, directories, globs, ``-`` and a list file into an ordered list of paths (duplicates dropped).

    Paths that do not exist are kept: they become error records when read, so one typo does not stop a run.
    No input at all is a usage error unless ``allow_empty``.
    """
    raw: list[str] = []
    for item in inputs:
        if item == "-":
            if sys.stdin is None or sys.stdin.closed:
                raise UsageError("'-' reads paths from stdin, but stdin is closed")
            raw.extend(line.strip() for line in sys.stdin if line.strip())
        else:
            raw.append(item)
    if files_from is not None:
        path = Path(files_from).expanduser()
        if not path.is_file():
            raise UsageError(f"--files-from {path} does not exist")
        raw.extend(ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())
    out: list[str] = []
    for item in raw:
        path = Path(item).expanduser()
        if path.is_dir():
            # every entry with an image suffix is an input, also broken symlinks, loops and FIFOs: they get an
            # error record instead of vanishing from the run
            out.extend(str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS
                       and not p.is_dir())
        elif not path.exists() and any(ch in item for ch in "*?["):
            out.extend(sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file()))
        else:
            out.append(item)
    if not out and not allow_empty:
        raise UsageError("no input images: give files, folders, globs, '-' (paths on stdin) or --files-from FILE")
    return list(dict.fromkeys(out))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB predictably (alpha on white, 16-bit/float scaled to 0..255)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and array.max(initial=0) > 255):
            array = array / 257.0
        elif image.mode == "F" and array.max(initial=0) <= 1.0:
            array = array * 255.0
        gray = Image.fromarray(np.clip(array.round(), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _heif_opener() -> bool:
    """Register pillow-heif's HEIC/HEIF opener if it is installed; whether it is."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def load_image(path: str | Path, max_side: int | None = None, short_side: int | None = None) -> Image.Image:
    """Decode one image file to RGB, EXIF-transposed; raise ImageError with a one-line reason on failure.

    Only regular files are read (a FIFO or device would block or never end); HEIC/HEIF needs pillow-heif.
    ``max_side``: a JPEG larger than this is decoded at a reduced DCT scale (1/2, 1/4, 1/8: Pillow's draft mode)
    whose long side lies between ``max_side / 2`` and ``max_side`` where possible, so a huge photo never exists at
    full size in memory; the caller resizes to the working size. ``short_side``: the caller needs only this many
    pixels on the short side (a classifier's input size): the DCT scale goes as low as keeps at least that.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except OSError as exc:  # a symlink loop, a permission problem
        raise ImageError(f"cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ImageError("is a directory")
    if not stat.S_ISREG(mode):
        raise ImageError("not a regular file (a FIFO, socket or device): give image files")
    if Path(path).suffix.lower() in HEIF_EXTENSIONS and not _heif_opener():
        raise ImageError("HEIC/HEIF images need the pillow-heif package: pip install pillow-heif")
    return decode_image(path, max_side, short_side)


def decode_image(source: str | Path | IO[bytes], max_side: int | None = None,
                 short_side: int | None = None) -> Image.Image:
    """Decode an image from a path or a binary file object (a tar member, a dataset cell) exactly as
    :func:`load_image` does (draft decoding, EXIF transpose, RGB); ``ImageError`` with a one-line reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                full = opened.size
                scale = 1.0
                if short_side and min(full) > short_side:
                    scale = short_side / min(full)
                elif max_side and max(full) > max_side:
                    # draft keeps the long side >= what is asked: ask for half, so the DCT scale may go down to
                    # between max_side / 2 and max_side (never decoding at full size for a reduction < 2x)
                    scale = max_side / 2 / max(full)
                if opened.format == "JPEG" and scale < 0.5:
                    opened.draft("RGB", (max(1, math.ceil(full[0] * scale)), max(1, math.ceil(full[1] * scale))))
                decoded = opened.size
                opened.load()
                image = to_rgb(ImageOps.exif_transpose(opened) or opened).copy()
        if decoded != full:  # decoded at a reduced DCT scale: remember the true size (EXIF rotation applied)
            turned = image.size == decoded[::-1] and decoded[0] != decoded[1]
            image.info[ORIGINAL_SIZE] = full[::-1] if turned else full
        return image
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large (decompression-bomb limit {MAX_PIXELS} px): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image or unsupported format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None


def default_workers(n_inputs: int, batch_size: int) -> int:
    """Worker processes for decoding: none for a single batch (start-up costs more than it saves)."""
    import os

    if n_inputs <= batch_size:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def as_pil(image: Any) -> Image.Image:
    """Accept a path, a PIL image or an HWC uint8 array (Python API convenience) and return RGB PIL."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        try:
            return to_rgb(Image.fromarray(image))
        except (TypeError, ValueError) as exc:
            raise ImageError(f"cannot read array of shape {image.shape} and dtype {image.dtype} as an image "
                             "(HWC or HW uint8 expected)") from exc
    if isinstance(image, str) or hasattr(image, "__fspath__"):
        return load_image(image)
    raise ImageError(f"unsupported input type {type(image).__name__}: give a path, PIL image, array or tensor")
