"""Warm-start a GroupViT from an open_clip ViT CLIP (``train-groupvit --init-clip``; not in the official recipe).

Source: an open_clip hub folder (``open_clip_config.json`` + ``open_clip_model.safetensors``, read with
safetensors, never pickle) or the bundled name ``shapes-clip``. Shapes below are for shapes-clip (C = 96,
grid 12 x 12, text width 64) and the tiny GroupViT of :func:`clipkit.training.groupvit.tiny_config`. A tensor is
copied only where its shape matches; everything else stays at GroupViT's init and is listed in the report.

What maps where (GroupViT name <- open_clip name):

- ``patch_embed.proj.weight [C, 3, 8, 8]`` <- ``visual.conv1.weight`` (open_clip's conv has no bias, so
  ``patch_embed.proj.bias`` is set to 0). ``cfg.image_mean/std`` become the source's preprocessing mean/std,
  which the conv was trained with.
- open_clip embeds ``ln_pre(conv + pos)`` with ``pos [1 + 144, C]`` (row 0 = CLS); GroupViT embeds
  ``LN(conv) + pos_embed`` (LayerNorm *before* the positions, no CLS), which cannot equal it exactly. We set
  ``patch_embed.norm.weight = a * ln_pre.weight``, ``.bias = ln_pre.bias`` and
  ``pos_embed [1, 144, C] = k * ln_pre.weight * (pos[1:] - mean over channels)``: the same formula with the
  per-token ``1 / std(conv + pos)`` replaced by two scalars ``a, k`` fitted by least squares on calibration
  images (``a = k = 1`` without them). On held-out shapes-world scenes this lifts the cosine between the
  warm-started stage-1 patch outputs and shapes-clip's block-2 patch outputs from 0.80 (``a = k = 1``; 0.74 for
  a verbatim copy of ``pos[1:]`` and ``ln_pre``) to 0.93; 0.99 is the ceiling set by CLS (exact embedding).
- stage-1 blocks ``img_encoder.layers.0.blocks.i`` <- ``visual.transformer.resblocks.i`` for i < depths[0]
  (2 of shapes-clip's 4): ``norm1/norm2 <- ln_1/ln_2``; ``attn.qkv [3C, C]`` <- ``attn.in_proj_weight/bias``
  (both fused in q, k, v order); ``attn.proj <- attn.out_proj``; ``mlp.fc1/fc2 <- mlp.c_fc/c_proj``. Exact
  (same pre-norm block, exact GELU, same heads) when heads and activation agree; otherwise not copied. In
  GroupViT these blocks also see the 32 group tokens (and open_clip's patches saw CLS), so the stage output is
  close to, not equal to, the source's; later stages and grouping blocks act on group tokens: left at init.
- text tower ``text_encoder.*`` <- the same open_clip names (token_embedding [49408, 64], positional_embedding
  [32, 64], resblocks.i.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_final): exact
  when heads, MLP width and activation agree (tiny_config's text tower is shapes-clip's), EOT pooling as
  open_clip's ``argmax`` pool.
- Left at init on purpose: the projection heads (GroupViT: Linear-BatchNorm-ReLU-Linear; open_clip: one
  linear ``visual.proj [96, 64]`` / ``text_projection [64, 64]``; no exact mapping through BatchNorm + ReLU),
  ``ln_post`` (GroupViT's final norm sits after the grouping stages, not after block 4), ``logit_scale`` (its
  trained value suits the source's heads, not random ones), group tokens, grouping blocks, stages 2-3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clipkit.groupvit.model import GroupViT

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# per-block (GroupViT name, open_clip name); the text block uses open_clip's names itself
_VIS_BLOCK = [("attn.qkv.weight", "attn.in_proj_weight"), ("attn.qkv.bias", "attn.in_proj_bias"),
              *((f"{o}.{wb}", f"{t}.{wb}") for o, t in (("norm1", "ln_1"), ("norm2", "ln_2"),
                                                         ("attn.proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"),
                                                         ("mlp.fc2", "mlp.c_proj")) for wb in ("weight", "bias"))]
_TXT_BLOCK = ["attn.in_proj_weight", "attn.in_proj_bias",
              *(f"{n}.{wb}" for n in ("ln_1", "attn.out_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
                for wb in ("weight", "bias"))]


def resolve_clip_source(source: str | Path) -> Path:
    """A bundled model name (``shapes-clip``) -> its folder; otherwise a folder with the open_clip hub files."""
    from clipkit.registry import bundled_models

    folder = bundled_models().get(str(source), Path(source))
    for name in ("open_clip_config.json", "open_clip_model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name} (need an open_clip hub folder or 'shapes-clip')")
    return folder


def load_clip_source(source: str | Path) -> tuple[Path, dict[str, Any], dict[str, Tensor]]:
    """(the resolved folder, its open_clip_config.json, its float32 state dict)."""
    from safetensors.torch import load_file

    folder = resolve_clip_source(source)
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    sd = load_file(str(folder / "open_clip_model.safetensors"))
    return folder, cfg, {k: v.float() for k, v in sd.items()}


def _children(sd: dict[str, Tensor], prefix: str) -> set[str]:
    return {k[len(prefix):] for k in sd if k.startswith(prefix)}


def _uncopied_prefixes(names: list[str], copied: set[str]) -> list[str]:
    """The shortest name prefixes that contain no copied tensor (a compact 'left at init' list)."""
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            p = ".".join(parts[:i])
            if not any(c == p or c.startswith(p + ".") for c in copied):
                out.add(p)
                break
    return sorted(out)


@torch.no_grad()
def init_from_clip(model: GroupViT, source: str | Path, calib_pixels: Tensor | None = None) -> dict[str, Any]:
    """Copy ``source``'s matching tensors into ``model`` (in place) and return a report.

    ``calib_pixels``: optional ``[B, 3, H, W]`` images in [0, 1] (unnormalised) to fit the embedding scalars.
    Report: ``copied`` {GroupViT name: source name}, ``left_at_init`` (prefixes), ``skipped`` {what: why},
    ``embedding`` {a, k, calib_images}, ``image_mean``/``image_std``, ``source``.
    """
    folder, oc_cfg, sd = load_clip_source(source)
    mcfg = oc_cfg.get("model_cfg", oc_cfg)
    vcfg, tcfg = mcfg.get("vision_cfg", {}), mcfg.get("text_cfg", {})
    act = "quick_gelu" if mcfg.get("quick_gelu") else "gelu"
    pre = oc_cfg.get("preprocess_cfg", {})
    mean, std = tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD))
    params = dict(model.named_parameters())
    copied: dict[str, str] = {}
    skipped: dict[str, str] = {}

    def put(dst: str, src: str, value: Tensor | None = None) -> bool:
        value = sd.get(src) if value is None else value
        if value is None or dst not in params:
            skipped[dst] = f"{src} missing"
            return False
        if value.shape != params[dst].shape:
            skipped[dst] = f"shape {tuple(params[dst].shape)} vs {src} {tuple(value.shape)}"
            return False
        params[dst].copy_(value)
        copied[dst] = src
        return True

    enc, v = model.img_encoder, model.cfg.vision
    if "visual.conv1.weight" not in sd:
        raise ValueError(f"{source}: not an open_clip ViT (no visual.conv1.weight)")
    if put("img_encoder.patch_embed.proj.weight", "visual.conv1.weight"):
        bias = sd.get("visual.conv1.bias", torch.zeros_like(enc.patch_embed.proj.bias))
        put("img_encoder.patch_embed.proj.bias", "visual.conv1.bias (absent: 0)", bias)
        model.cfg.image_mean, model.cfg.image_std = mean, std
    g, b, pos = sd.get("visual.ln_pre.weight"), sd.get("visual.ln_pre.bias"), sd.get("visual.positional_embedding")
    a = k = 1.0
    n_calib = 0
    if g is None or pos is None or pos.shape[0] != enc.pos_embed.shape[1] + 1 or b is None:
        skipped["img_encoder.pos_embed, patch_embed.norm"] = "no ln_pre, or positions not 1 + grid^2 rows"
    else:
        p = pos[1:] - pos[1:].mean(-1, keepdim=True)  # drop CLS row 0
        if calib_pixels is not None and "img_encoder.patch_embed.proj.weight" in copied:
            x = (calib_pixels.float() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
            c = F.conv2d(x, sd["visual.conv1.weight"], stride=v.patch_size).flatten(2).transpose(1, 2)
            if c.shape[1] == pos.shape[0] - 1:
                # target ln_pre(c + pos) - b  ~  a * u + k * w, u = g * LN(c), w = g * p
                target = F.layer_norm(c + pos[1:], (c.shape[-1],)) * g
                u, w = F.layer_norm(c, (c.shape[-1],)) * g, (g * p).expand_as(c)
                gram = torch.tensor([[(u * u).sum(), (u * w).sum()], [(u * w).sum(), (w * w).sum()]]).double()
                rhs = torch.stack([(u * target).sum(), (w * target).sum()]).double()
                a, k = torch.linalg.solve(gram, rhs).tolist()
                n_calib = int(x.shape[0])
        put("img_encoder.patch_embed.norm.weight", "visual.ln_pre.weight (x a)", a * g)
        put("img_encoder.patch_embed.norm.bias", "visual.ln_pre.bias", b)
        put("img_encoder.pos_embed", "visual.positional_embedding[1:] (centred, x k ln_pre.weight)",
            (k * g * p).unsqueeze(0))
    heads = vcfg.get("width", 768) // vcfg.get("head_width", 64)
    n_vis = sum(1 for key in sd if key.startswith("visual.transformer.resblocks.") and key.endswith("ln_1.weight"))
    block0 = _children(sd, "visual.transformer.resblocks.0.")
    if heads != v.num_heads[0] or act != "gelu" or any(c.startswith(("ls_", "ln_attn")) for c in block0):
        skipped["img_encoder.layers.0.blocks"] = f"source heads {heads}, act {act}, or layer scale: not exact"
    else:
        for i in range(min(v.depths[0], n_vis)):
            for ours, theirs in _VIS_BLOCK:
                put(f"img_encoder.layers.0.blocks.{i}.{ours}", f"visual.transformer.resblocks.{i}.{theirs}")
    t = model.cfg.text
    tp = "text." if "text.token_embedding.weight" in sd else ""
    put("text_encoder.token_embedding.weight", f"{tp}token_embedding.weight")
    put("text_encoder.positional_embedding", f"{tp}positional_embedding")
    t_heads = tcfg.get("heads", 8)
    odd = {key for key in ("embed_cls", "no_causal_mask", "final_ln_after_pool") if tcfg.get(key)}
    if tcfg.get("pool_type", "argmax") != "argmax":
        odd.add("pool_type")
    if t_heads != t.heads or act != t.hidden_act or odd or tcfg.get("ls_init_value") is not None:
        skipped["text_encoder.transformer"] = (f"source heads {t_heads}, act {act}, options {sorted(odd)} vs "
                                               f"heads {t.heads}, act {t.hidden_act}: not exact")
    else:
        n_txt = sum(1 for key in sd if key.startswith(f"{tp}transformer.resblocks.") and key.endswith("ln_1.weight"))
        for i in range(min(t.layers, n_txt)):
            for name in _TXT_BLOCK:
                put(f"text_encoder.transformer.resblocks.{i}.{name}", f"{tp}transformer.resblocks.{i}.{name}")
        for wb in ("weight", "bias"):
            put(f"text_encoder.ln_final.{wb}", f"{tp}ln_final.{wb}")
    return {"source": str(folder), "copied": copied,
            "left_at_init": _uncopied_prefixes(list(params), set(copied)), "skipped": skipped,
            "embedding": {"a": round(a, 5), "k": round(k, 5), "calib_images": n_calib},
            "image_mean": list(mean), "image_std": list(std)}


def summary(report: dict[str, Any]) -> str:
    """One log line: how many tensors were copied, from where, and what stayed at init."""
    e = report["embedding"]
    return (f"warm start from {report['source']}: copied {len(report['copied'])} tensors "
            f"(embedding a={e['a']}, k={e['k']} from {e['calib_images']} images); left at init: "
            f"{', '.join(report['left_at_init'])}" + (f"; skipped: {report['skipped']}" if report["skipped"] else ""))
