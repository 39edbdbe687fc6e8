"""Helpers for continuing a GroupViT run in another regime (``clipkit world train-groupvit --init ...``).

``set_image_size``: continue at another resolution (positions resized once); ``freeze_grouping`` and
``grouping_eval_mode``: keep the grouping (every assignment map) fixed and train only what names the groups.
Both are clipkit deviations from the official single-phase recipe; docs/group.md says why and what they gave.
"""

from __future__ import annotations

import torch

from clipkit.groupvit.model import GroupViT


def set_image_size(model: GroupViT, size: int) -> None:
    """Continue training at another resolution (as ViTs are fine-tuned at a higher one): the learned position
    grid is resized once, bicubically (as inference at other sizes does on the fly), and the config follows."""
    vision = model.cfg.vision
    if size % vision.patch_size:
        raise ValueError(f"image size {size} is not a multiple of the patch size {vision.patch_size}")
    side = size // vision.patch_size
    with torch.no_grad():
        pos = model.img_encoder.pos_embed_for(side, side).clone()
    model.img_encoder.pos_embed = torch.nn.Parameter(pos)
    vision.image_size = size


def _frozen_count(model: GroupViT, stages: int | None) -> int:
    total = len(model.img_encoder.cfg.num_output_groups)
    n = total if stages is None else stages
    if not 1 <= n <= total:
        raise ValueError(f"can freeze 1..{total} grouping stages, not {n}")
    return n


def freeze_grouping(model: GroupViT, stages: int | None = None) -> list[str]:
    """Freeze every parameter that the assignment maps of the first ``stages`` grouping stages (default: all)
    depend on; returns their names. What stays trainable names the groups without moving those maps: the
    value path of the last frozen stage's Grouping Block (``assign.v_proj``, ``assign.proj``, ``norm_new_x``,
    ``mlp_channels``), every later stage (with ``stages`` < all, the later stages' grouping trains too), the
    final norm, both projection heads, the text tower and the temperatures. :func:`grouping_eval_mode` then
    makes the frozen assignments the inference ones (argmax, no Gumbel noise)."""
    enc = model.img_encoder
    n = _frozen_count(model, stages)
    last = enc.layers[n - 1].downsample
    keep = {id(p) for m in (last.assign.v_proj, last.assign.proj, last.norm_new_x, last.mlp_channels)
            for p in m.parameters()}
    for layer in enc.layers[n:]:
        keep |= {id(p) for p in layer.parameters()}
    keep |= {id(p) for p in enc.norm.parameters()}
    frozen = []
    for name, p in enc.named_parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
            frozen.append(f"img_encoder.{name}")
    return frozen


def grouping_eval_mode(model: GroupViT, stages: int | None = None) -> None:
    """Put the first ``stages`` (default: all) grouping stages of the image encoder in eval mode (hard argmax
    assignment; their drop-path is off)."""
    n = _frozen_count(model, stages)
    for layer in model.img_encoder.layers[:n]:
        if layer.downsample is not None:
            layer.eval()
