"""``clipkit sketch``: CLIPasso object sketches (Vinker et al., SIGGRAPH 2022) for a list of images.

For each input image: optimise stroke sketches against the loaded CLIP (:mod:`clipkit.clipasso`), keep the best
seed, and write ``OUT_DIR/<stem>.svg`` (one cubic-Bézier ``<path>`` per stroke), ``OUT_DIR/<stem>.png`` (the
rendered canvas, white paper) and, with ``frames``, ``OUT_DIR/<stem>.gif`` (the optimisation every
``eval_interval`` steps) — all atomically. One :class:`clipkit.results.Sketch` per image, or an ``ErrorRecord``
for an input that cannot be decoded. Official code: https://github.com/yael-vinker/CLIPasso.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipkit.clipasso import SketchOptions, SketchOutput, sketch_image
from clipkit.errors import UsageError
from clipkit.images import as_pil, expand_inputs, iter_images
from clipkit.registry import LoadedModel, load_model
from clipkit.results import ErrorRecord, Result, Sketch
from clipkit.runner import progress
from clipkit.svg import to_svg
from clipkit.writers import atomic_write_text, save_image

FRAME_MS = 100  # GIF frame duration


def make_options(**overrides: Any) -> SketchOptions:
    """SketchOptions with the given fields set; unknown names are a UsageError."""
    known = {f.name for f in fields(SketchOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown sketch option(s): {', '.join(unknown)}")
    opts = SketchOptions(**overrides)
    opts.validate()
    return opts


def sketch_png(out: SketchOutput) -> Image.Image:
    """The rendered sketch as an 8-bit greyscale PIL image (white paper, black ink)."""
    return Image.fromarray(((1.0 - np.clip(out.alpha, 0, 1)) * 255.0 + 0.5).astype(np.uint8), "L")


def write_sketch(out: SketchOutput, out_dir: str | Path, stem: str) -> dict[str, str]:
    """Write ``<stem>.svg``, ``<stem>.png`` (and ``<stem>.gif`` when ``out.frames``); return their paths."""
    folder = Path(out_dir)
    paths = {"svg": str(folder / f"{stem}.svg"), "png": str(folder / f"{stem}.png")}
    atomic_write_text(paths["svg"], to_svg(out.points, out.width, out.size))
    save_image(paths["png"], sketch_png(out))
    if out.frames:
        frames = [Image.fromarray(f, "L") for f in [*out.frames, np.asarray(sketch_png(out))]]
        paths["gif"] = str(folder / f"{stem}.gif")
        save_image(paths["gif"], frames[0], save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
    return paths


def _unique_stem(path: str, used: set[str]) -> str:
    """The file's stem, suffixed ``-2``, ``-3`` … when another input of this run already took it."""
    stem = Path(path).stem or "image"
    candidate, k = stem, 1
    while candidate in used:
        k += 1
        candidate = f"{stem}-{k}"
    used.add(candidate)
    return candidate


def iter_sketch(
    paths: Sequence[str],
    model: LoadedModel,
    out_dir: str | Path,
    *,
    options: SketchOptions | None = None,
    workers: int | None = None,
    quiet: bool = True,
    skip: set[str] | None = None,
) -> Iterator[Result]:
    """Sketch image files in order, writing artefacts to ``out_dir``; yield a Sketch or ErrorRecord each."""
    opts = options or SketchOptions()
    opts.validate()
    todo = [p for p in paths if not skip or p not in skip]
    used: set[str] = set()
    with progress(len(todo), "sketch", quiet) as bar:
        for item in iter_images(todo, workers=workers):
            if item.error is not None:
                yield ErrorRecord(item.path, item.error)
            else:
                out = sketch_image(item.image, model, opts)
                written = write_sketch(out, out_dir, _unique_stem(item.path, used))
                extras = {"seed": out.seed, "best_iteration": out.best_iteration}
                if "gif" in written:
                    extras["gif"] = written["gif"]
                yield Sketch(item.path, written["svg"], written["png"], out.loss, out.iterations, out.seconds,
                             extras=extras)
            bar.advance()


def sketch(
    images: Any,
    *,
    out_dir: str | Path | None = None,
    model: str | LoadedModel | None = None,
    pretrained: str | None = None,
    device: str | None = None,
    **options: Any,
) -> list[SketchOutput] | list[Result]:
    """CLIPasso sketches; the Python face of ``clipkit sketch``.

    ``images``: a path, folder or glob (or a list of them) — then ``out_dir`` is required and one Sketch or
    ErrorRecord per input is returned, with files written — or a PIL image / HWC uint8 array (or a list), for
    which the in-memory :class:`clipkit.clipasso.SketchOutput` objects are returned (and nothing is written).
    ``options``: any :class:`clipkit.clipasso.SketchOptions` field (strokes, iterations, seeds, width, seed, …).
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device)
    opts = make_options(**options)
    items = images if isinstance(images, list | tuple) else [images]
    if all(isinstance(i, str) or hasattr(i, "__fspath__") for i in items):
        if out_dir is None:
            raise UsageError("sketching image files needs an output folder (out_dir)")
        return list(iter_sketch(expand_inputs([str(i) for i in items]), loaded, out_dir, options=opts))
    return [sketch_image(as_pil(i), loaded, opts) for i in items]
