"""CLIP zero-shot classification (Radford et al., 2021; open_clip's ``zero_shot_classifier``).

Each label's text embedding is the renormalised mean of its prompt-template embeddings (``clipkit.prompts``).
Scores are ``softmax(exp(logit_scale) * cos(image, text))`` over the labels, or, for SigLIP-family models (which
have a learned ``logit_bias``), independent ``sigmoid(exp(logit_scale) * cos + logit_bias)`` per label.

``multi_label`` keeps every label whose score reaches ``threshold`` instead of ranking them: natural for SigLIP's
independent probabilities (default threshold 0.5); with softmax models the scores still compete, so its default
threshold there is 0.2.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from clipkit.errors import UsageError
from clipkit.images import Batch, as_pil, expand_inputs
from clipkit.prompts import parse_labels, text_embeddings
from clipkit.registry import LoadedModel, load_model
from clipkit.results import Classification, ErrorRecord, Result
from clipkit.runner import run_over_images

DEFAULT_BATCH_SIZE = 32


def label_probabilities(model: LoadedModel, image_features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` image and ``[N, D]`` text embeddings (both L2-normalised) -> ``[B, N]`` float32 scores."""
    logits = model.logit_scale * image_features.float() @ text.float().T
    if model.is_siglip:
        return torch.sigmoid(logits + (model.logit_bias or 0.0))
    return logits.softmax(dim=-1)


def _check_options(model: LoadedModel, top_k: int | None, threshold: float | None) -> float:
    """Validate ``top_k``/``threshold``; return the threshold (default 0.5 for SigLIP, 0.2 for softmax models)."""
    if top_k is not None and top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if threshold is None:
        threshold = 0.5 if model.is_siglip else 0.2
    if not 0.0 <= threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    return threshold


def _select(labels: list[str], scores: torch.Tensor, top_k: int | None, multi_label: bool,
            threshold: float) -> tuple[list[str], Any]:
    values = scores.cpu().numpy()
    order = values.argsort()[::-1]
    if multi_label:
        order = [i for i in order if values[i] >= threshold]
    if top_k is not None:
        order = order[:top_k]
    return [labels[i] for i in order], values[list(order)]


def iter_classify(
    paths: Sequence[str],
    labels: Sequence[str],
    model: LoadedModel,
    *,
    templates: str | Sequence[str] | None = None,
    top_k: int | None = None,
    multi_label: bool = False,
    threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    quiet: bool = True,
    skip: set[str] | None = None,
) -> Iterator[Result]:
    """Classify image files in order, yielding a Classification or an ErrorRecord per input."""
    threshold = _check_options(model, top_k, threshold)
    labels = list(labels)
    text = text_embeddings(model, labels, templates)

    def process(batch: Batch) -> list[Classification]:
        probs = label_probabilities(model, model.encode_image(batch.pixels), text)
        out = []
        for item, row in zip(batch.ok, probs, strict=True):
            chosen, values = _select(labels, row, top_k, multi_label, threshold)
            out.append(Classification(item.path, chosen, values))
        return out

    yield from run_over_images(paths, process, transform=model.preprocess, batch_size=batch_size,
                               workers=workers, quiet=quiet, skip=skip, description="classify")


def classify(
    images: Any,
    labels: str | Sequence[str],
    *,
    model: str | LoadedModel | None = None,
    pretrained: str | None = None,
    templates: str | Sequence[str] | None = None,
    top_k: int | None = None,
    multi_label: bool = False,
    threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> list[Result]:
    """Zero-shot classify ``images`` against ``labels``; the Python face of ``clipkit classify``.

    ``images``: a path, folder or glob, a PIL image or HWC uint8 array, or a list of these. ``labels``: ``"a,b"``
    or a list. Returns one ``Classification`` (labels sorted by score) or ``ErrorRecord`` per image, in order.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model, pretrained, device=device,
                                                                      precision=precision)
    label_list = parse_labels(labels)
    items = images if isinstance(images, list | tuple) else [images]
    if all(isinstance(i, str) or hasattr(i, "__fspath__") for i in items):
        return list(iter_classify(expand_inputs([str(i) for i in items]), label_list, loaded,
                                  templates=templates, top_k=top_k, multi_label=multi_label,
                                  threshold=threshold, batch_size=batch_size, workers=workers))
    results: list[Result] = []
    threshold = _check_options(loaded, top_k, threshold)
    text = text_embeddings(loaded, label_list, templates)
    for index, item in enumerate(items):
        name = str(item) if isinstance(item, str) else f"<image {index}>"
        try:
            pixels = loaded.preprocess(as_pil(item)).unsqueeze(0)
        except Exception as exc:  # one bad in-memory image must not lose the others
            results.append(ErrorRecord(name, str(exc)))
            continue
        probs = label_probabilities(loaded, loaded.encode_image(pixels), text)[0]
        chosen, values = _select(label_list, probs, top_k, multi_label, threshold)
        results.append(Classification(name, chosen, values))
    return results
