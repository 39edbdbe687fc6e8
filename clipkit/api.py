"""The Python face of every command: one ``run`` over the method table, and one function per method.

``clipkit.classify(images, labels, **options)`` does exactly what ``clipkit classify`` does: the same registry,
config, predictor, runner and artefact writer (:func:`run`); ``options`` are the method's config fields
(:mod:`clipkit.configs`) plus the run options of :func:`run`. Each returns a list with one result (or
:class:`clipkit.results.ErrorRecord`) per input, in order; :func:`run` itself streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from clipkit.config import MethodConfig
from clipkit.methods import METHODS, MethodSpec, predictor_class

_RUN_KEYS = ("out_dir", "batch_size", "workers", "quiet", "skip", "files_from", "input_format", "image_column",
             "shard", "engine", "ray_concurrency", "ray_gpus")
_MODEL_KEYS = ("pretrained", "device", "precision", "offline", "trust_checkpoint")


def spec_of(method: str) -> MethodSpec:
    """The method's table entry; an unknown name lists the known ones."""
    from clipkit.errors import UsageError

    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    return METHODS[method]


def parse_text(spec: MethodSpec, text: Any, labels_file: str | Path | None = None) -> Any:
    """The predictor's text argument: a label list, ``(caption, phrases)``, or None."""
    if spec.text == "labels":
        from clipkit.prompts import parse_labels

        return parse_labels(text, labels_file)
    if spec.text == "caption":
        if isinstance(text, tuple):
            return text
        return (text, None)
    return None


def load_for(spec: MethodSpec, model: Any = None, **model_options: Any) -> Any:
    """The registry's model for ``spec`` (a loaded model object passes through)."""
    from clipkit import registry

    if spec.model_kind == "none":
        return None
    if model is not None and not isinstance(model, str | Path):
        return model
    options = {k: v for k, v in model_options.items() if v is not None}
    name = str(model) if model is not None else spec.default_model
    return registry.load(name, kind=spec.model_kind, **options)


def build_predictor(spec: MethodSpec, model: Any, model_options: dict[str, Any], text: Any,
                    config: MethodConfig) -> Any:
    """The method's predictor: the registry's model for ``spec``, the parsed text and the config (also called
    inside each Ray actor, so it takes only picklable arguments)."""
    return predictor_class(spec)(load_for(spec, model, **model_options), text, config)


def check_run_options(input_format: str | None = None, shard: Any = None, engine: str | None = None,
                      ray_concurrency: int | None = None, ray_gpus: float | None = None) -> None:
    """Usage errors of the input and engine options, without torch: ``--input-format``, ``--shard``, ``--engine``,
    and Ray options without ``--engine ray``."""
    from clipkit.engines import ENGINES
    from clipkit.errors import UsageError
    from clipkit.sharding import parse_shard
    from clipkit.sources import check_format

    check_format(input_format)
    parse_shard(shard)
    if engine is not None and engine not in ENGINES:
        raise UsageError(f"unknown --engine {engine!r}: use one of {', '.join(ENGINES)}")
    for name, value in (("--ray-concurrency", ray_concurrency), ("--ray-gpus", ray_gpus)):
        if value is not None and engine != "ray":
            raise UsageError(f"{name} applies only with --engine ray")


def run(method: str, images: Any, text: Any = None, *, model: Any = None, config: MethodConfig | None = None,
        out_dir: str | Path | None = None, batch_size: int | None = None, workers: int | None = None,
        quiet: bool = True, skip: set[str] | None = None, files_from: str | Path | None = None,
        max_side: int | None = 0, input_format: str | None = None, image_column: str | None = None,
        shard: str | tuple[int, int] | None = None, engine: str | None = None, ray_concurrency: int | None = None,
        ray_gpus: float | None = None, **options: Any) -> Iterator[Any]:
    """Stream ``method``'s results over ``images`` (paths, folders, globs, webdataset shards, dataset folders, PIL
    images, arrays, tensors, or a list of them), one per input in order; artefacts go to ``out_dir``. ``skip``:
    input keys already done. ``max_side``: working resolution (default: the method's, ``MethodSpec.max_side``;
    None: full size). ``input_format``, ``image_column``, ``shard``: see :func:`clipkit.runner.collect_inputs`.
    ``engine``: ``"local"`` (default) or ``"ray"`` (:mod:`clipkit.engines.ray`, with ``ray_concurrency`` actors
    and ``ray_gpus`` GPUs each)."""
    from clipkit.artefacts import ArtefactWriter
    from clipkit.errors import UsageError
    from clipkit.runner import collect_inputs, pending
    from clipkit.runner import run as run_inputs

    spec = spec_of(method)
    if spec.out_dir == "none" and out_dir is not None:
        raise UsageError(f"{method} writes no pictures: --out-dir does not apply")
    check_run_options(input_format, shard, engine, ray_concurrency, ray_gpus)
    items = collect_inputs(images, files_from, input_format=input_format, image_column=image_column, shard=shard)
    model_options = {k: options.pop(k) for k in _MODEL_KEYS if k in options}
    cfg = spec.config.of(config, **options)
    text_value = parse_text(spec, text)
    writer = ArtefactWriter(out_dir, cfg, [i.key for i in items],
                            text_value if spec.text == "labels" else ())
    predictor = build_predictor(spec, model, model_options, text_value, cfg)
    try:
        # the predictor may know a better default batch for its model (small towers: small batches)
        batch = batch_size or getattr(predictor, "default_batch_size", None) or spec.batch_size
        side = spec.max_side if max_side == 0 else max_side
        def on_result(result: Any, sample: Any) -> None:
            writer.write(result, sample.image)
        if engine == "ray":
            from functools import partial

            from clipkit.engines import ray as ray_engine

            yield from ray_engine.run(partial(build_predictor, spec, model, model_options, text_value, cfg),
                                      predictor, pending(items, skip), batch_size=batch,
                                      keep_image=writer.needs_image, max_side=side, concurrency=ray_concurrency,
                                      num_gpus=ray_gpus, quiet=quiet, on_result=on_result)
        else:
            yield from run_inputs(predictor, items, batch_size=batch, workers=workers,
                                  keep_image=writer.needs_image, quiet=quiet, skip=skip, description=method,
                                  max_side=side, on_result=on_result)
    finally:
        writer.close()


def _run_list(method: str, images: Any, text: Any, **options: Any) -> list[Any]:
    return list(run(method, images, text, **options))


def classify(images: Any, labels: str | Sequence[str], **options: Any) -> list[Any]:
    """Zero-shot classify ``images`` against ``labels`` (``"a,b"`` or a list): one
    :class:`~clipkit.results.Classification` (labels sorted by score) or ``ErrorRecord`` per image."""
    return _run_list("classify", images, labels, **options)


def segment(images: Any, labels: str | Sequence[str], **options: Any) -> list[Any]:
    """Segment ``images`` into ``labels``: one :class:`~clipkit.results.Segmentation` (label map at the original
    size, 0 = background) or ``ErrorRecord`` per image."""
    return _run_list("segment", images, labels, **options)


def group(images: Any, labels: str | Sequence[str], **options: Any) -> list[Any]:
    """GroupViT grouping of ``images`` named with ``labels``: one :class:`~clipkit.results.Segmentation` (group
    maps in ``extras``) or ``ErrorRecord`` per image."""
    return _run_list("group", images, labels, **options)


def detect(images: Any, labels: str | Sequence[str], **options: Any) -> list[Any]:
    """Detect ``labels`` in ``images``: one :class:`~clipkit.results.Detections` (XYXY original pixels) or
    ``ErrorRecord`` per image."""
    return _run_list("detect", images, labels, **options)


def ground(images: Any, caption: str | None = None, phrases: str | Sequence[str] | None = None,
           **options: Any) -> list[Any]:
    """Ground a caption's noun phrases (or explicit ``phrases``, ``"a;b"`` or a list) in ``images``: one
    :class:`~clipkit.results.Grounding` or ``ErrorRecord`` per image."""
    return _run_list("ground", images, (caption, phrases), **options)


def sketch(images: Any, **options: Any) -> list[Any]:
    """CLIPasso sketches of ``images``: one :class:`~clipkit.results.Sketch` (strokes, rendered canvas, ``svg``)
    or ``ErrorRecord`` per image; with ``out_dir`` the SVG/PNG files are written too (the CLI requires it)."""
    return _run_list("sketch", images, None, **options)
