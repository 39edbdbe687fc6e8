"""Saliency of an image from a CLIP ViT's self-attention, as the official CLIPasso code computes it.

CLIPasso (yael-vinker/CLIPasso, ``models/painter_params.py``, ``interpret``) runs the target through CLIP
ViT-B/32, takes every block's attention probabilities averaged over heads, keeps the CLS query's row over the
patch keys (7×7 for ViT-B/32 at 224 px), averages those rows over all blocks, upsamples bicubically to
the canvas and min–max normalises. (It also accumulates a relevance matrix ``R`` that it never uses; we skip
it.)

Deviation: for an open_clip ViT pooled by averaging its patch tokens (``pool_type="avg"``, e.g. the bundled
``shapes-clip``) the CLS token does not feed the embedding, so the row used is the mean over the patch
queries — the attention the pooled embedding pays to each patch — instead of the CLS row.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def is_attention_vit(visual: torch.nn.Module) -> bool:
    """Whether ``visual`` is an open_clip VisionTransformer whose blocks use ``nn.MultiheadAttention``."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    return (
        blocks is not None
        and hasattr(visual, "_embeds")
        and all(isinstance(getattr(b, "attn", None), torch.nn.MultiheadAttention) for b in blocks)
    )


@torch.no_grad()
def attention_saliency(visual: torch.nn.Module, pixels: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Attention saliency map of one image.

    Args:
        visual: an open_clip ``VisionTransformer`` (``model.visual``) with ``nn.MultiheadAttention`` blocks.
        pixels: Tensor[1, 3, h, w], the image CLIP-normalised at the model's input size.
        size: (height, width) of the returned map (the canvas).
    Returns:
        float32 [height, width] in [0, 1].
    Raises:
        ValueError: ``visual`` is not such a ViT (check with :func:`is_attention_vit`).
    """
    if not is_attention_vit(visual):
        raise ValueError("attention saliency needs an open_clip ViT with nn.MultiheadAttention blocks")
    transformer = visual.transformer
    x = visual._embeds(pixels)  # [1, 1 + gh*gw, D] (class token first), batch-first
    batch_first = getattr(transformer, "batch_first", True)
    rows = []
    for blk in transformer.resblocks:
        y = blk.ln_1(x)
        y_in = y if batch_first else y.transpose(0, 1)
        _, probs = blk.attn(y_in, y_in, y_in, need_weights=True, average_attn_weights=True)  # [1, L, L]
        if getattr(visual, "pool_type", "tok") == "tok":
            rows.append(probs[:, 0, 1:])
        else:
            rows.append(probs[:, 1:, 1:].mean(dim=1))
        x = blk(x if batch_first else x.transpose(0, 1))
        x = x if batch_first else x.transpose(0, 1)
    rel = torch.stack(rows).mean(dim=0)  # [1, gh*gw]
    grid_h = pixels.shape[-2] // visual.patch_size[0]
    grid_w = pixels.shape[-1] // visual.patch_size[1]
    rel = rel.reshape(1, 1, grid_h, grid_w).float()
    rel = F.interpolate(rel, size=size, mode="bicubic", align_corners=False)[0, 0]
    rel = rel - rel.min()
    peak = rel.max()
    return (rel / peak if peak > 0 else rel).cpu().numpy().astype(np.float32)


def image_saliency(loaded, image: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Attention saliency of an image with a loaded CLIP ViT (``clipkit.registry.LoadedModel``).

    Args:
        image: Tensor[1, 3, h, w] RGB in [0, 1] (any size; CLIP-normalised and resized to the model's input
            bicubically here, as CLIPasso feeds its attention model the normalised target).
        size: (height, width) of the returned map.
    Returns:
        float32 [height, width] in [0, 1].
    Raises:
        ValueError: the model is not an attention ViT (:func:`is_attention_vit`).
    """
    visual = loaded.model.visual
    mean = torch.tensor(loaded.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std, dtype=torch.float32).view(1, 3, 1, 1)
    normalised = (image.float().cpu() - mean) / std
    model_in = F.interpolate(normalised, size=tuple(loaded.image_size), mode="bicubic", align_corners=False)
    dtype = next(visual.parameters()).dtype
    return attention_saliency(visual, model_in.to(loaded.device, dtype=dtype), size)
