"""Golden dense features (NACLIP, SCLIP, ClearCLIP, MaskCLIP) from the official code on a tiny perturbed ViT.

Glue re-implemented here (the official repos wrap it in mmseg segmentors): building the tiny model, the input
tensors, dropping the CLS token, and for MaskCLIP the patch embedding and the mmcv ``attn``/``ffn`` call
conventions (``identity + module(x)``). The last-block maths is the official code's own.

For the non-square input the positional embedding is resized to the exact grid with
``F.interpolate(size=…, mode="bicubic")`` (clipkit's documented deviation from the repos' ``scale_factor``) and
handed to the official model pre-resized, so the comparison isolates the attention maths.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from official import function_from, head, load_module, load_package

REPOS = {
    "naclip": ("sinahmr/NACLIP", "clip/model.py"),
    "sclip": ("wangf3014/SCLIP", "clip/model.py"),
    "clearclip": ("mc-lan/ClearCLIP", "open_clip/transformer.py"),
    "maskclip": ("chongzhou96/MaskCLIP", "mmseg/models/backbones/vit.py"),
}
#: the tiny open_clip ViT (OpenAI-style: QuickGELU, CLS pooling, no layer scale)
CFG = {"image_size": 24, "patch_size": 4, "width": 32, "layers": 2, "heads": 2, "mlp_ratio": 4.0,
       "output_dim": 16, "act": "quick_gelu"}
SEED = 0


def build_visual(cfg: dict = CFG) -> torch.nn.Module:
    """The tiny open_clip ``VisionTransformer`` of ``cfg`` (random init, not yet perturbed)."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer(
        image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=cfg["width"], layers=cfg["layers"],
        heads=cfg["heads"], mlp_ratio=cfg["mlp_ratio"], output_dim=cfg["output_dim"], act_layer=QuickGELU,
    ).eval()


def perturb(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.2) -> None:
    """Add ``scale``·N(0, 1) to every parameter: LayerNorm weights leave 1, biases leave 0."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


def resized_pos(visual: torch.nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """``[1 + h*w, width]``: CLS row kept, patch rows bicubic-resized to ``grid`` (exact size)."""
    pos = visual.positional_embedding.detach()
    n = visual.grid_size
    patch = pos[1:].reshape(1, n[0], n[1], -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _openai_style(module_name: str, repo: str, path: str, sd: dict, pos: torch.Tensor | None):
    m = load_module(module_name, repo, path)
    ov = m.VisionTransformer(input_resolution=CFG["image_size"], patch_size=CFG["patch_size"], width=CFG["width"],
                             layers=CFG["layers"], heads=CFG["heads"], output_dim=CFG["output_dim"])
    ov.load_state_dict(sd, strict=True)
    if pos is not None:
        ov.positional_embedding = torch.nn.Parameter(pos.clone())
    return ov.eval()


def run_naclip(sd, x, pos):
    ov = _openai_style("naclip_clip_model", *REPOS["naclip"], sd, pos)
    ov.set_params("reduced", "naclip", 5.0)  # NACLIP defaults: arch='reduced', attn_strategy='naclip', std 5
    return ov(x, return_all=True)[:, 1:]


def run_sclip(sd, x, pos):
    ov = _openai_style("sclip_clip_model", *REPOS["sclip"], sd, pos)
    return ov(x, return_all=True, csa=True)[:, 1:]


def run_clearclip(sd, x, pos):
    load_package("clearclip_oc", "mc-lan/ClearCLIP", "open_clip", ["transformer.py", "utils.py", "pos_embed.py"])
    from clearclip_oc.transformer import QuickGELU, VisionTransformer

    ov = VisionTransformer(CFG["image_size"], CFG["patch_size"], CFG["width"], CFG["layers"], CFG["heads"],
                           CFG["mlp_ratio"], output_dim=CFG["output_dim"], act_layer=QuickGELU)
    ov.load_state_dict(sd, strict=True)
    if pos is not None:
        ov.positional_embedding = torch.nn.Parameter(pos.clone())
    return ov.eval()(x, model_type="ClearCLIP", ignore_residual=True)  # ClearCLIP's defaults


class _MmcvAttn:
    """mmcv ``MultiheadAttention(batch_first=True)``: ``identity + attn(q, q, q)``; ``.attn`` the torch MHA."""

    def __init__(self, mha: torch.nn.MultiheadAttention):
        self.attn = mha

    def __call__(self, query, identity):
        return identity + self.attn(query, query, query, need_weights=False)[0]


class _MmcvLayer:
    """The attributes ``TransformerEncoderLayer.forward`` reads, mapped onto an open_clip block."""

    def __init__(self, blk):
        self.norm1, self.norm2, self.attn = blk.ln_1, blk.ln_2, _MmcvAttn(blk.attn)
        self.ffn = lambda y, identity: identity + blk.mlp(y)


def run_maskclip(visual, x, pos):
    """MaskCLIP's backbone (pre_norm, final_norm, return_qkv on the last layer) and its head's 1×1 ``proj``."""
    repo, path = REPOS["maskclip"]
    layer_forward = function_from(repo, path, "TransformerEncoderLayer.forward", {"torch": torch, "F": F})
    t = visual.conv1(x)
    t = t.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.reshape(1, 1, -1).expand(t.shape[0], -1, -1)
    t = torch.cat([cls, t], 1) + (visual.positional_embedding if pos is None else pos)
    t = visual.ln_pre(t)  # pre_norm=True
    blocks = visual.transformer.resblocks
    for i, blk in enumerate(blocks):
        t, _q, _k, v = layer_forward(_MmcvLayer(blk), t, return_qkv=i == len(blocks) - 1)
    v = visual.ln_post(v)  # final_norm=True: v = self.norm1(v)
    return (v @ visual.proj)[:, 1:]  # head: feat = self.proj(v), a 1x1 conv holding proj.T


def make(out_dir: Path) -> dict:
    """Write ``dense_vit.safetensors`` and ``dense_variants.npz`` to ``out_dir``; return a sources record."""
    from safetensors.torch import save_file

    from clipkit import dense

    torch.manual_seed(SEED)
    visual = build_visual()
    gen = torch.Generator().manual_seed(SEED + 1)
    perturb(visual, gen)
    sd = {k: v.detach().clone().contiguous() for k, v in visual.state_dict().items()}
    inputs = {"square": torch.randn(2, 3, 24, 24, generator=gen), "rect": torch.randn(2, 3, 16, 28, generator=gen)}
    arrays: dict[str, np.ndarray] = {"config": np.array(json.dumps(CFG))}
    report = {}
    with torch.no_grad():
        for name, x in inputs.items():
            grid = (x.shape[-2] // CFG["patch_size"], x.shape[-1] // CFG["patch_size"])
            pos = None if grid == tuple(visual.grid_size) else resized_pos(visual, grid)
            arrays[f"pixels_{name}"] = x.numpy()
            outs = {
                "naclip": run_naclip(sd, x, pos), "sclip": run_sclip(sd, x, pos),
                "clearclip": run_clearclip(sd, x, pos), "maskclip": run_maskclip(visual, x, pos),
            }
            for variant, tok in outs.items():
                ref = tok.reshape(x.shape[0], grid[0], grid[1], -1)
                ours = dense.patch_embeddings(visual, x, variant, normalize=False)
                report[f"{variant}_{name}"] = float((ours - ref).abs().max())
                arrays[f"{variant}_{name}"] = ref.numpy().astype(np.float32)
    save_file(sd, str(out_dir / "dense_vit.safetensors"))
    np.savez_compressed(out_dir / "dense_variants.npz", **arrays)
    return {"repos": {v: (r, p, head(r)) for v, (r, p) in REPOS.items()}, "seed": SEED, "config": CFG,
            "max_abs_diff_clipkit": report}
