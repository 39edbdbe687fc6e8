"""Tokenising and label embeddings for GroupViT's own text tower.

GroupViT uses CLIP's BPE (NVlabs ``datasets/tokenizer.py``; the port uses ``CLIPTokenizer``): open_clip's
``SimpleTokenizer`` gives the same ids (SOT 49406, EOT 49407, zero padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.groupvit.model import GroupViT


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int) -> Tensor:
    """``[len(texts), context_length]`` int64 token ids (truncated texts keep their EOT)."""
    return _tokenizer(context_length)(list(texts))


@torch.inference_mode()
def label_embeddings(model: GroupViT, labels: Sequence[str], templates: Sequence[str] = ("{}",)) -> Tensor:
    """``[N, D]`` L2-normalised label embeddings, templates ensembled as the official
    ``build_text_embedding`` does (mean of the unnormalised projections, then normalise)."""
    texts = [t.format(label) for label in labels for t in templates]
    tokens = tokenize(texts, model.cfg.text.context_length).to(next(model.parameters()).device)
    emb = model.encode_text(tokens).float().reshape(len(labels), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)
