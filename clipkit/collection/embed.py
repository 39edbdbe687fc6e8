"""``clipkit embed``: image (and text) embeddings of a registry model, streamed into shards of an embedding folder.

The images go through the one runner (:mod:`clipkit.runner`: inputs, decoding workers, batches, error records,
progress); :class:`EmbedPredictor` turns each batch into one :class:`Embedding` per image, and a
:class:`~clipkit.collection.shards.ShardWriter` writes them out shard by shard (layout, manifest and resume:
:mod:`clipkit.collection.shards`). Texts (``--texts FILE``, one per line) are embedded raw, without prompt
templates, into the ``text`` set, as clip-retrieval embeds captions.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipkit.collection import manifest as mf
from clipkit.collection import shards as sh
from clipkit.collection.config import EmbedConfig
from clipkit.methods import Sample
from clipkit.methods.classify import DECODE_BOUND_PARAMS  # small image towers are decode-bound
from clipkit.registry import LoadedModel

MAX_SIDE = 4096  # working resolution before the model's preprocess (which resizes to its input size anyway)


@dataclass
class Embedding:
    """One image's embedding: ``vector`` ``[D]`` float32 (L2-normalised unless ``normalize=False``), ``size``
    (W, H) of the original image."""

    path: str
    vector: np.ndarray
    size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "width": self.size[0], "height": self.size[1],
                "embedding": [float(v) for v in self.vector]}


class EmbedPredictor:
    """Built once from a loaded CLIP; ``predict`` embeds a batch of preprocessed images (``[3, H, W]`` each)."""

    keep_image = False

    def __init__(self, model: LoadedModel, text: Any = None, config: EmbedConfig | None = None):
        self.model, self.config = model, config or EmbedConfig()
        self.transform = model.preprocess  # runs in the decoding workers
        self.decode_short_side = min(model.image_size)
        self.decode_bound = sum(p.numel() for p in model.model.visual.parameters()) < DECODE_BOUND_PARAMS
        self.default_batch_size = 8 if self.decode_bound else 32

    def predict(self, samples: list[Sample]) -> list[Embedding]:
        pixels = torch.stack([s.pixels for s in samples])
        vectors = encode_images(self.model, pixels, self.config.normalize).numpy()
        return [Embedding(s.key, v, s.size) for s, v in zip(samples, vectors, strict=True)]


def encode_images(model: LoadedModel, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """``[B, 3, H, W]`` preprocessed pixels → ``[B, D]`` float32 on the CPU (L2-normalised when ``normalize``)."""
    if normalize:
        return model.encode_image(pixels).cpu()
    from clipkit.device import inference

    with inference(model.device, model.precision):
        return model.model.encode_image(pixels.to(model.device)).float().cpu()


def encode_texts(model: LoadedModel, texts: list[str], normalize: bool = True) -> torch.Tensor:
    """``N`` strings → ``[N, D]`` float32 on the CPU (L2-normalised when ``normalize``), no prompt templates."""
    if normalize:
        return model.encode_text(texts).cpu()
    from clipkit.device import inference
    from clipkit.registry import encode_tokens

    with inference(model.device, model.precision):
        return encode_tokens(model.model, model.tokenizer(texts).to(model.device)).float().cpu()


def embed(images: Any, out: str | Path, *, texts: Sequence[str] | None = None, model: str | None = None,
          pretrained: str | None = None, config: EmbedConfig | None = None, resume: bool = False,
          batch_size: int | None = None, workers: int | None = None, quiet: bool = True,
          files_from: str | Path | None = None, input_format: str | None = None, image_column: str | None = None,
          shard: str | tuple[int, int] | None = None, **options: Any) -> dict[str, Any]:
    """Embed ``images`` (paths, folders, globs, in-memory images: anything :func:`clipkit.runner.collect_inputs`
    takes, with its ``input_format``, ``image_column`` and ``shard``; None for texts only) and ``texts`` into the
    embedding folder ``out``.

    Returns a summary: ``{"folder", "images", "texts", "errors", "skipped", "rows", "seconds"}`` (counts of this
    run; ``rows``: per set in the whole collection). Inputs that fail are written to ``DIR/errors.jsonl`` and
    reported on stderr (unless ``quiet``); the run goes on. ``options``: fields of :class:`EmbedConfig`
    (``dtype="float32"``, ``shard_size=…``) and the registry's model options (``device``, ``precision`` …).
    """
    from clipkit import registry
    from clipkit.errors import UsageError
    from clipkit.runner import collect_inputs, resolved, run

    cfg = EmbedConfig.of(config, **{k: options.pop(k) for k in list(options) if k in EmbedConfig.model_fields})
    model_options = options
    folder = Path(out)
    no_images = images is None or (isinstance(images, list | tuple) and not images)
    if no_images and files_from is None and not texts:
        raise UsageError("give images to embed (files, folders, globs, -) and/or --texts FILE")
    items = [] if no_images and files_from is None else collect_inputs(
        images, files_from, input_format=input_format, image_column=image_column, shard=shard)
    spec = mf.model_spec(model, pretrained)
    mf.check_resume(folder, mf.read_manifest(folder), cfg, resume, model, pretrained)
    handle = sh.lock(folder)
    try:
        manifest = mf.read_manifest(folder)  # again, under the lock
        mf.check_resume(folder, manifest, cfg, resume, model, pretrained)
        loaded = registry.load_model(model, pretrained, **{k: v for k, v in model_options.items()
                                                           if v is not None})
        if manifest is not None:
            mf.check_identity(folder, manifest, loaded.identity)
            sh.remove_strays(folder, manifest)
        dim = int(loaded.encode_text(["dimension probe"]).shape[1])
        manifest = manifest or mf.new_manifest(loaded, spec, cfg, dim)
        mf.write_manifest(folder, manifest)
        started = time.perf_counter()
        summary: dict[str, Any] = {"folder": str(folder), "images": 0, "texts": 0, "errors": 0, "skipped": 0}
        errors = sh.ErrorLog(folder)
        if items:
            done = sh.done_keys(folder, manifest, "image")
            skip = set(done) | {resolved(k) for k in done if not k.startswith("<image ")}
            predictor = EmbedPredictor(loaded, None, cfg)
            writer = sh.ShardWriter(folder, manifest, "image", cfg.shard_size)
            results = run(predictor, items, batch_size=batch_size or predictor.default_batch_size,
                          workers=workers, quiet=quiet, skip=skip, description="embed", max_side=MAX_SIDE)
            for result in results:
                if isinstance(result, Embedding):
                    writer.add(result.path, result.vector, width=result.size[0], height=result.size[1])
                else:
                    errors.add(result.to_dict())
                    if not quiet:
                        print(f"error: {result.path}: {result.error}", file=sys.stderr)
            writer.flush()
            summary["images"] = writer.written
            summary["skipped"] = len(items) - writer.written - errors.count
        if texts:
            summary["texts"] = _embed_texts(loaded, folder, manifest, list(texts), cfg)
        errors.close()
        summary["errors"] = errors.count
        summary["rows"] = {s: mf.rows(manifest, s) for s in mf.SET_NAMES if s in manifest["sets"]}
        summary["seconds"] = round(time.perf_counter() - started, 3)
        return summary
    finally:
        handle.close()


def _embed_texts(model: LoadedModel, folder: Path, manifest: dict[str, Any], texts: list[str],
                 cfg: EmbedConfig) -> int:
    """Embed the texts not yet in the text set, in batches of ``cfg.text_batch_size``; returns how many."""
    done = set(sh.done_keys(folder, manifest, "text"))
    todo = [t for t in texts if t not in done]
    writer = sh.ShardWriter(folder, manifest, "text", cfg.shard_size)
    for i in range(0, len(todo), cfg.text_batch_size):
        batch = todo[i:i + cfg.text_batch_size]
        for text, vector in zip(batch, encode_texts(model, batch, cfg.normalize).numpy(), strict=True):
            writer.add(text, vector)
    writer.flush()
    return writer.written

