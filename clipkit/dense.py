"""Dense (per-patch) CLIP embeddings from any open_clip ViT, training-free.

Shared by ``segment``, ``detect``, ``ground`` and ``group``'s fallback. Every variant runs the stock blocks
``0 … L-2`` once and re-computes only the last block, so a dense pass costs about one ``encode_image``.

With ``X`` the input of the last block, ``Y = ln_1(X)``, per-head ``q, k, v`` from the block's ``in_proj``
and ``s = 1/√d_head``, the variants differ only in the last block:

variant     last-block attention                        residual/FFN  official code
----------  ------------------------------------------  ------------  --------------------
plain       stock softmax(q·kᵀ s): the block, bit-exact  kept          open_clip
maskclip    value path only: out_proj(v)                 kept          chongzhou96/MaskCLIP
sclip       softmax(q·qᵀ s) + softmax(k·kᵀ s)            kept          wangf3014/SCLIP
clearclip   softmax(q·qᵀ s)                              dropped       mc-lan/ClearCLIP
naclip      softmax(k·kᵀ s + G), G Gaussian prior        dropped       sinahmr/NACLIP

Facts re-read in the official code (nothing copied):

* MaskCLIP, ``mmseg/models/backbones/vit.py`` (``TransformerEncoderLayer.forward(return_qkv=True)``): the value
  part of ``in_proj`` goes through ``out_proj``, then ``v += x`` and ``v = ffn(norm2(v), identity=v)`` — the
  residual and the FFN are kept; the final norm and projection follow.
* SCLIP, ``clip/model.py`` (``custom_attn(csa=True)``): ``softmax(q qᵀ·s) + softmax(k kᵀ·s)``; the last block keeps
  ``x + attn`` and ``x + mlp(ln_2(x))``.
* ClearCLIP, ``open_clip/transformer.py`` (``ignore_residual=True``, ``model_type='ClearCLIP'``): the output is the
  attention branch alone, ``out_proj(softmax(q qᵀ·s) v)`` — no residual, no FFN.
* NACLIP, ``clip/model.py`` (``arch='reduced'``, ``attn_strategy='naclip'``, ``gaussian_std=5``): logits ``k kᵀ·s +
  ω``, ``ω[i, j] = exp(-‖p_i - p_j‖² / (2σ²))`` over patch grid positions (peak 1, *added* to the logits), zero
  in the CLS row and column; the output is ``out_proj(attn v)`` — no residual, no FFN.

All then apply ``ln_post`` and ``proj`` to every token, drop the CLS token and L2-normalise. Layer-scale (``ls_1`` /
``ls_2``) is applied wherever the stock block applies it (OpenAI-style models have none). Deviation: the
positional embedding is resized with ``F.interpolate(size=…, mode="bicubic")`` to the exact target grid; the
official repos pass ``scale_factor=(n+0.1)/N`` (same output size, sub-pixel differences).
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.errors import ModelError, UsageError
from clipkit.sliding import image_tensor, model_window, shifted_grid, slide_images, sliding_logits

VARIANTS = ("naclip", "clearclip", "sclip", "maskclip", "plain")
DEFAULT_VARIANT = "naclip"
#: NACLIP's Gaussian σ in patches (official default ``gaussian_std=5``).
NACLIP_SIGMA = 5.0
#: Softmax temperature each official repo multiplies the cosine with; ``plain`` uses the model's own scale.
VARIANT_LOGIT_SCALE: dict[str, float | None] = {
    "naclip": 40.0,  # NACLIP naclip.py logit_scale=40
    "sclip": 40.0,  # SCLIP clip_segmentor.py logit_scale=40
    "clearclip": 50.0,  # ClearCLIP clearclip_segmentor.py logit_scale=50
    "maskclip": 100.0,  # MaskCLIP maskclip_head.py softmax(output * 100)
    "plain": None,
}

__all__ = [
    "DEFAULT_VARIANT",
    "VARIANTS",
    "check_shifts",
    "default_variant",
    "dense_logits",
    "dense_logits_batch",
    "image_tensor",
    "logit_scale_for",
    "min_cosine_for",
    "model_window",
    "patch_embeddings",
    "patch_grid",
    "shifted_grid",
    "sliding_logits",
    "visual_tokens",
]


# ----------------------------------------------------------------------------------------------- model access
def _clip_module(model: Any) -> torch.nn.Module:
    """The open_clip model inside a ``LoadedModel`` (or the model itself)."""
    return getattr(model, "model", model)


def _visual(model: Any) -> torch.nn.Module:
    """The open_clip ``VisionTransformer`` of ``model`` or a clear ModelError naming what is unsupported."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    clip = _clip_module(model)
    visual = getattr(clip, "visual", clip)
    if not isinstance(visual, VisionTransformer):
        raise ModelError(
            f"dense features need an open_clip ViT with a CLS token; {type(visual).__name__} is not one "
            "(timm towers such as SigLIP and ResNets are not supported)"
        )
    if visual.attn_pool is not None:
        raise ModelError("dense features do not support open_clip ViTs with attentional pooling (CoCa)")
    if not isinstance(visual.transformer.resblocks[-1], ResidualAttentionBlock):
        raise ModelError("dense features need open_clip's default ResidualAttentionBlock in the image tower")
    return visual


def patch_grid(model: Any) -> tuple[int, int]:
    """Patch size ``(ph, pw)`` in pixels of the model's image tower."""
    ps = _visual(model).patch_size
    return (int(ps[0]), int(ps[1])) if isinstance(ps, tuple | list) else (int(ps), int(ps))


def default_variant(model: Any) -> str:
    """The dense variant to use when none is given: ``"plain"`` for average-pooled towers (``pool_type="avg"``:
    the image embedding is the mean of the projected patch tokens, so the stock tokens are trained in the
    joint space), else NACLIP (the best training-free variant for CLS-pooled CLIPs, METHODS.md)."""
    visual = getattr(getattr(model, "model", model), "visual", None)
    return "plain" if getattr(visual, "pool_type", None) == "avg" else DEFAULT_VARIANT


def logit_scale_for(model: Any, variant: str) -> float:
    """The official softmax scale of ``variant`` (the model's own ``exp(logit_scale)`` for ``plain``)."""
    _check_variant(variant)
    scale = VARIANT_LOGIT_SCALE[variant]
    if scale is not None:
        return float(scale)
    ls = getattr(model, "logit_scale", None)
    if isinstance(ls, int | float):  # LoadedModel exposes the float
        return float(ls)
    return float(_clip_module(model).logit_scale.detach().exp().item())


def min_cosine_for(model: Any, variant: str, requested: float | None = None) -> float | None:
    """The background cut on a pixel's best label cosine: ``requested``, or when that is ``None`` the model's
    calibrated cut for ``variant`` (``clipkit.json`` → ``segment_min_cosine``; shapes-clip ships one because its
    captions never name the background); ``None`` (no cut) for ``-1`` or when the model has none."""
    if requested is None:
        requested = (getattr(model, "meta", {}) or {}).get("segment_min_cosine", {}).get(variant)
    return None if requested is None or requested == -1 else float(requested)


def _autocast(model: Any) -> contextlib.AbstractContextManager:
    """The ``LoadedModel``'s precision (autocast); nothing for a bare open_clip model."""
    precision = getattr(model, "precision", None)
    if precision is None:
        return contextlib.nullcontext()
    from clipkit.device import autocast

    return autocast(model.device, precision)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise UsageError(f"unknown dense variant {variant!r}; choose one of: {', '.join(VARIANTS)}")


# ------------------------------------------------------------------------------------------------- tokens
# per image tower: (grid, device, dtype, parameter version) -> resized embedding; the version key makes a
# cache entry stale as soon as training updates the parameter in place.
_POS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _positional_embedding(visual: torch.nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """``[1 + h*w, width]`` positional embedding for a ``grid = (h, w)`` patch grid (bicubic resize)."""
    pos = visual.positional_embedding
    native = tuple(int(g) for g in visual.grid_size)
    if tuple(grid) == native:
        return pos
    key = (grid[0], grid[1], str(pos.device), pos.dtype, pos._version, torch.is_inference_mode_enabled())
    per_model = _POS_CACHE.setdefault(visual, {})
    cached = per_model.get(key)
    if cached is None:
        cls_pos, patch_pos = pos[:1], pos[1:]
        patch_pos = patch_pos.reshape(1, native[0], native[1], -1).permute(0, 3, 1, 2).float()
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)
        cached = torch.cat([cls_pos, patch_pos], dim=0)
        if not cached.requires_grad:  # never cache a tensor that carries a graph
            for old in [k for k in per_model if k[4] != pos._version]:
                del per_model[old]
            per_model[key] = cached
    return cached


def _embed(visual: torch.nn.Module, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patchify + CLS + positional embedding + ``ln_pre``: ``[B, 1+h*w, width]`` and the grid ``(h, w)``."""
    x = visual.conv1(pixels.to(visual.conv1.weight.dtype))  # [B, width, h, w]
    grid = (int(x.shape[-2]), int(x.shape[-1]))
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + _positional_embedding(visual, grid).to(x.dtype)
    x = visual.patch_dropout(x)  # identity in eval mode, kept so train-mode use matches open_clip
    return visual.ln_pre(x), grid


def visual_tokens(
    model: Any, pixels: torch.Tensor, indices: list[int] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
    """Run the stock blocks ``0 … L-2`` of the image tower.

    Args:
        model: ``LoadedModel`` or open_clip model.
        pixels: ``[B, 3, H, W]`` normalised pixels; ``H, W`` any multiple of the patch size.
        indices: block indices (0-based, ``< L-1``) whose outputs to return as well.
    Returns:
        ``x`` — ``[B, 1+h*w, width]`` input of the last block; the requested intermediates (same shape);
        and the patch grid ``(h, w)``.
    """
    visual = _visual(model)
    x, grid = _embed(visual, pixels)
    blocks = visual.transformer.resblocks
    wanted = set(indices or [])
    inter: list[torch.Tensor] = []
    for i, blk in enumerate(blocks[:-1]):
        x = blk(x)
        if i in wanted:
            inter.append(x)
    return x, inter, grid


# ------------------------------------------------------------------------------------------------ last block
def _naclip_prior(grid: tuple[int, int], sigma: float, device, dtype) -> torch.Tensor:
    """``[1+h*w, 1+h*w]`` additive prior: exp(-d²/2σ²) between patches, 0 in the CLS row and column."""
    return _naclip_prior_cached(tuple(grid), float(sigma), str(device), dtype)


@functools.lru_cache(maxsize=16)
def _naclip_prior_cached(grid: tuple[int, int], sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    pts = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
    d2 = torch.cdist(pts, pts).pow(2)
    prior = torch.zeros(h * w + 1, h * w + 1, device=device)
    prior[1:, 1:] = torch.exp(-d2 / (2.0 * sigma**2))
    return prior.to(dtype)


def _last_block(blk: torch.nn.Module, x: torch.Tensor, variant: str, grid: tuple[int, int]) -> torch.Tensor:
    """The last block's output ``[B, L, width]`` under ``variant`` (see the module docstring)."""
    if variant == "plain":
        return blk(x)
    attn = blk.attn
    b, n, c = x.shape
    heads = attn.num_heads
    hd = c // heads
    scale = hd**-0.5
    y = blk.ln_1(x)
    q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    if variant == "maskclip":
        out = attn.out_proj(v)  # every token attends only to itself: the value path
    else:
        q, k, v = (t.reshape(b, n, heads, hd).transpose(1, 2) for t in (q, k, v))  # [B, heads, L, hd]
        if variant == "sclip":
            weights = (q @ q.transpose(-2, -1) * scale).softmax(-1)
            weights = weights + (k @ k.transpose(-2, -1) * scale).softmax(-1)
        elif variant == "clearclip":
            weights = (q @ q.transpose(-2, -1) * scale).softmax(-1)
        elif variant == "naclip":
            prior = _naclip_prior(grid, NACLIP_SIGMA, x.device, k.dtype)
            weights = (k @ k.transpose(-2, -1) * scale + prior).softmax(-1)
        else:  # pragma: no cover - guarded by _check_variant
            raise UsageError(f"unknown dense variant {variant!r}")
        out = attn.out_proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    out = blk.ls_1(out)
    if variant in ("clearclip", "naclip"):
        return out  # residual and FFN dropped, as in the official code
    x = x + out
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _project(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ln_post`` + ``proj`` on every token: ``[B, L, width] -> [B, L, D]``."""
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def check_shifts(model: Any, shifts: int) -> None:
    """``UsageError`` unless ``shifts`` (sub-patch passes per axis) is a positive divisor of the patch size."""
    ph, pw = patch_grid(model)
    if shifts < 1 or ph % shifts or pw % shifts:
        raise UsageError(f"--shifts must be a positive divisor of the patch size {ph}x{pw}, got {shifts}")


def patch_embeddings(
    model: Any, pixels: torch.Tensor, variant: str = DEFAULT_VARIANT, *, normalize: bool = True, shifts: int = 1
) -> torch.Tensor:
    """Per-patch embeddings in CLIP's joint space.

    Args:
        model: ``LoadedModel`` (or an open_clip CLIP model) with a ViT image tower.
        pixels: ``[B, 3, H, W]`` float, normalised with the model's mean/std, on the model's device; ``H`` and
            ``W`` any multiple of the patch size (the positional embedding is interpolated bicubically).
        variant: one of ``VARIANTS``.
        normalize: L2-normalise each patch (default); ``False`` returns the raw projected tokens.
        shifts: ``> 1`` gives a grid ``shifts`` times finer per axis from ``shifts²`` sub-patch-shifted passes
            at the same scale (:func:`clipkit.sliding.shifted_grid`); must divide the patch size.
    Returns:
        ``[B, h, w, D]`` float32, ``h = shifts · H // patch``, ``w = shifts · W // patch``.
    """
    _check_variant(variant)
    visual = _visual(model)
    ph, pw = patch_grid(model)
    if pixels.ndim != 4 or pixels.shape[-2] % ph or pixels.shape[-1] % pw:
        raise UsageError(f"pixels must be [B, 3, H, W] with H, W multiples of the patch size {ph}x{pw}")
    check_shifts(model, shifts)
    if shifts > 1:
        fine = shifted_grid(pixels, lambda px: patch_embeddings(model, px, variant, normalize=normalize),
                            patch=(ph, pw), shifts=shifts)
        return F.normalize(fine, dim=-1) if normalize else fine
    with _autocast(model):
        x, _, grid = visual_tokens(model, pixels)
        x = _last_block(visual.transformer.resblocks[-1], x, variant, grid)
        tokens = _project(visual, x)[:, 1:].float()
    tokens = tokens.reshape(tokens.shape[0], grid[0], grid[1], -1)
    return F.normalize(tokens, dim=-1) if normalize else tokens


# ------------------------------------------------------------------------------------------ image + sliding
def dense_logits(
    model: Any,
    image: Image.Image,
    text_emb: torch.Tensor,
    *,
    variant: str = DEFAULT_VARIANT,
    stride: int | tuple[int, int] | None = None,
    scale: float | None = None,
    short_side: int | None = None,
    shifts: int = 1,
    full_size: bool = True,
) -> torch.Tensor:
    """Per-pixel class logits ``scale · cos(patch, text)`` at the original image size.

    Args:
        model: ``LoadedModel`` with a ViT image tower.
        image: PIL image (any size, any mode; converted to RGB).
        text_emb: ``[N, D]`` label text embeddings (normalised here again).
        variant: one of ``VARIANTS`` (default NACLIP).
        stride: sliding-window stride in pixels; default half the window (the official 112 for 224).
        scale: logit scale; default the variant's official one (``VARIANT_LOGIT_SCALE``).
        short_side: resize so the short side has this size before sliding; default the window's short side
            (so an image at the model's input size is one window, and tiny models see objects at their
            training scale). The logits are resized back to the image's own size.
        shifts: sub-patch shifted passes per window (:func:`patch_embeddings`): a finer grid, same scale.
        full_size: False stops at the working resolution (the resized image the windows slide over), for
            callers that upsample in blocks (:func:`clipkit.pixelwise.label_pixels`).
    Returns:
        ``[N, H, W]`` float32 on the model's device, ``(H, W)`` the image's size (or the working size);
        softmax over dim 0 gives per-pixel class probabilities.
    """
    return dense_logits_batch(model, [image], text_emb, variant=variant, stride=stride, scale=scale,
                              short_side=short_side, shifts=shifts, full_size=full_size)[0]


def dense_logits_batch(
    model: Any, images: list[Image.Image], text_emb: torch.Tensor, *, variant: str = DEFAULT_VARIANT,
    stride: int | tuple[int, int] | None = None, scale: float | None = None, short_side: int | None = None,
    shifts: int = 1, full_size: bool = True,
) -> list[torch.Tensor]:
    """:func:`dense_logits` of several images, one list entry each; their windows share the backbone's batches
    (:func:`clipkit.sliding.sliding_logits_batch`), the numbers are the same as image by image."""
    _check_variant(variant)
    scale = logit_scale_for(model, variant) if scale is None else float(scale)
    text = F.normalize(text_emb.float(), dim=-1).to(getattr(model, "device", text_emb.device))

    def crop_fn(crops: torch.Tensor) -> torch.Tensor:
        emb = patch_embeddings(model, crops, variant, shifts=shifts)  # [b, h, w, D]
        return torch.einsum("bhwd,nd->bnhw", emb, text)

    cos = slide_images(model, images, crop_fn, patch=patch_grid(model), stride=stride, short_side=short_side,
                       full_size=full_size)
    return [c * scale for c in cos]
