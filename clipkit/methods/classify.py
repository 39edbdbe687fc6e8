"""CLIP zero-shot classification (Radford et al., 2021; open_clip's ``zero_shot_classifier``).

Each label's text embedding is the renormalised mean of its prompt-template embeddings (``clipkit.prompts``).
Scores are ``softmax(exp(logit_scale) * cos(image, text))`` over the labels, or, for SigLIP-family models (which
have a learned ``logit_bias``), independent ``sigmoid(exp(logit_scale) * cos + logit_bias)`` per label.

``multi_label`` keeps every label whose score reaches ``threshold`` instead of ranking them: natural for SigLIP's
independent probabilities (default threshold 0.5); with softmax models the scores still compete, so its default
threshold there is 0.2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipkit.configs import ClassifyConfig
from clipkit.methods import Sample
from clipkit.prompts import text_embeddings
from clipkit.registry import LoadedModel
from clipkit.results import Classification

__all__ = ["ClassifyConfig", "ClassifyPredictor", "label_probabilities"]

# image towers below this many parameters encode faster than the workers decode (shapes-clip: 0.34 M; ViT-B-32:
# 88 M is compute-bound) — measured in bench/README.md
DECODE_BOUND_PARAMS = 20_000_000


def label_probabilities(model: LoadedModel, image_features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` image and ``[N, D]`` text embeddings (both L2-normalised) -> ``[B, N]`` float32 scores."""
    logits = model.logit_scale * image_features.float() @ text.float().T
    if model.is_siglip:
        return torch.sigmoid(logits + (model.logit_bias or 0.0))
    return logits.softmax(dim=-1)


class ClassifyPredictor:
    """Labels embedded once; ``predict`` scores a batch of preprocessed images (``[3, H, W]`` float32 each)."""

    keep_image = False

    def __init__(self, model: LoadedModel, labels: Sequence[str], config: ClassifyConfig | None = None):
        self.model, self.labels = model, list(labels)
        self.config = config or ClassifyConfig()
        self.threshold = self.config.threshold
        if self.threshold is None:
            self.threshold = 0.5 if model.is_siglip else 0.2
        self.text = text_embeddings(model, self.labels, self.config.templates)
        self.transform = model.preprocess  # runs in the decoding workers
        # the preprocess resizes the short side to the input size: JPEGs need decoding no larger than that
        self.decode_short_side = min(model.image_size)
        # a tiny image tower is decode-bound: its threads should leave the decoding workers their cores
        self.decode_bound = sum(p.numel() for p in model.model.visual.parameters()) < DECODE_BOUND_PARAMS
        # measured: batch 8 keeps a small tower fed from the decoding workers (32 waits on a whole batch)
        self.default_batch_size = 8 if self.decode_bound else None

    def predict(self, samples: list[Sample]) -> list[Classification]:
        pixels = torch.stack([s.pixels for s in samples])
        probs = label_probabilities(self.model, self.model.encode_image(pixels), self.text).cpu().numpy()
        return [self._select(s.key, row) for s, row in zip(samples, probs, strict=True)]

    def _select(self, key: str, values) -> Classification:
        order = values.argsort(kind="stable")[::-1]
        if self.config.multi_label:
            order = [i for i in order if values[i] >= self.threshold]
        if self.config.top_k is not None:
            order = order[: self.config.top_k]
        return Classification(key, [self.labels[i] for i in order], values[list(order)])
