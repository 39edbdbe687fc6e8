"""LSeg: a DPT-style decoder over frozen CLIP patch tokens, trained to put every pixel in CLIP's text space.

Follows isl-org/lang-seg (``modules/models/lseg_net.py``, ``lseg_blocks.py``; read for facts, nothing copied):

* hooks on four evenly spaced blocks of the frozen image tower (ViT-B/32: blocks 2, 5, 8, 11; ViT-L/16:
  5, 11, 17, 23) — here ``L/4-1, L/2-1, 3L/4-1, L-1`` for an ``L``-block tower;
* DPT "reassemble": readout ``project`` (each patch token concatenated with the CLS token → Linear → GELU),
  tokens → ``[width, h, w]``, a 1×1 conv to ``dims[i]`` and resampling (transposed conv up, strided conv
  down) to ¼, ⅛, 1/16, 1/32 of the input resolution (ViT-L/16: 4×, 2×, 1×, ½× the patch grid), then a
  3×3 conv to ``features`` channels;
* four RefineNet fusion blocks (two residual conv units with batch norm, bilinear ×2 with
  ``align_corners=True``, 1×1 output conv), deepest first;
* the fused features end at half the input resolution; ``head1``: a 1×1 conv to the CLIP embedding dimension
  ``C``; per-pixel features and text embeddings are
  L2-normalised, their dot product (C → N channels) is multiplied by the fixed ``1/0.07`` (lang-seg builds
  ``logit_scale`` as ``Parameter(log(1/0.07)).exp()``, a constant), then bilinear ×2 (``align_corners=True``);
* trained with pixel-wise cross-entropy over those logits, text encoder frozen.

Deviations (small model, CPU): ``features`` and ``dims`` are much smaller than DPT's 256 / [256, 512, 1024,
1024]; the reassembly factors are the powers of two nearest to ``patch/4, patch/8, patch/16, patch/32`` (lang-seg
fixes 4, 2, 1, ½ for every backbone; for the patch-8 shapes-clip that would decode at twice the input
resolution); each fusion block upsamples to the next skip's exact size instead of a fixed ×2 (odd patch grids);
the output is resized to the input crop when ×2 does not land on it exactly.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipkit import dense
from clipkit.errors import ModelError
from clipkit.sliding import slide_images

LSEG_TEMPERATURE = 0.07
HEAD_WEIGHTS = "lseg_head.safetensors"
HEAD_CONFIG = "lseg_config.json"


@dataclass
class LSegConfig:
    """Architecture of an LSeg head (saved next to its weights as ``lseg_config.json``)."""

    width: int  # image-tower width of the CLIP model it was trained on
    out_dim: int  # CLIP joint-space dimension C
    layers: int  # number of blocks of that tower
    hooks: list[int] = field(default_factory=list)  # 0-based block indices
    features: int = 32
    dims: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    factors: list[float] = field(default_factory=lambda: [4.0, 2.0, 1.0, 0.5])  # resampling of each hook
    clip_model: str = ""  # the model spec it was trained for, e.g. "shapes-clip"
    background: list[str] = field(default_factory=lambda: ["background"])  # label(s) trained as background
    templates: str | None = None  # template set the text embeddings were built with
    meta: dict = field(default_factory=dict)  # training facts (steps, data, wall time, metrics)

    @staticmethod
    def default_factors(patch: int) -> list[float]:
        """Resampling factors putting the hooks at ¼ … 1/32 of the input: powers of two nearest patch/4 …."""
        first = 2.0 ** round(math.log2(max(patch, 1) / 4))
        return [first / 2**i for i in range(4)]

    @staticmethod
    def default_hooks(layers: int) -> list[int]:
        """``L/4-1, L/2-1, 3L/4-1, L-1`` (lang-seg's 2, 5, 8, 11 for 12 blocks); repeats for towers under 4."""
        return [max(0, round(layers * f) - 1) for f in (0.25, 0.5, 0.75, 1.0)]


def _resample(width: int, dim: int, factor: float) -> nn.Sequential:
    """DPT's per-hook projection: 1×1 conv to ``dim``, then ×factor (transposed conv up, strided 3×3 down)."""
    layers: list[nn.Module] = [nn.Conv2d(width, dim, 1)]
    if factor > 1:
        k = round(factor)
        layers.append(nn.ConvTranspose2d(dim, dim, k, stride=k))
    elif factor < 1:
        layers.append(nn.Conv2d(dim, dim, 3, stride=round(1 / factor), padding=1))
    return nn.Sequential(*layers)


class _Readout(nn.Module):
    """DPT readout "project": concat(token, CLS) → Linear → GELU, per patch token."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1+hw, width] -> [B, hw, width]
        cls = x[:, :1].expand_as(x[:, 1:])
        return self.proj(torch.cat([x[:, 1:], cls], dim=-1))


class _ResConvUnit(nn.Module):
    """ReLU → 3×3 conv → BN → ReLU → 3×3 conv → BN, plus the skip."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
            nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Fusion(nn.Module):
    """RefineNet fusion: (x + rcu1(skip)) → rcu2 → bilinear resize (align_corners) → 1×1 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.rcu1, self.rcu2 = _ResConvUnit(c), _ResConvUnit(c)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            x = x + self.rcu1(skip)
        x = self.rcu2(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out(x)


class LSegHead(nn.Module):
    """The trainable part of LSeg: reassemble + fusion + ``head1`` (the CLIP model stays frozen, outside)."""

    def __init__(self, cfg: LSegConfig):
        super().__init__()
        if len(cfg.hooks) != 4 or len(cfg.dims) != 4:
            raise ModelError("an LSeg head needs exactly four hooks and four dims")
        self.cfg = cfg
        w = cfg.width
        self.readouts = nn.ModuleList([_Readout(w) for _ in range(4)])
        self.post = nn.ModuleList([_resample(w, d, f) for d, f in zip(cfg.dims, cfg.factors, strict=True)])
        self.rn = nn.ModuleList([nn.Conv2d(d, cfg.features, 3, padding=1, bias=False) for d in cfg.dims])
        self.fusion = nn.ModuleList([_Fusion(cfg.features) for _ in range(4)])
        self.head1 = nn.Conv2d(cfg.features, cfg.out_dim, 1)

    def forward(self, hooked: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """Hooked outputs (4 × ``[B, 1+h*w, width]``) → unnormalised pixel embeddings at twice the first
        level's resolution, ``[B, C, 2·f₁·h, 2·f₁·w]`` (half the input for patch 8 and 16)."""
        h, w = grid
        feats = []
        for x, readout, post, rn in zip(hooked, self.readouts, self.post, self.rn, strict=True):
            t = readout(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)
            feats.append(rn(post(t)))
        l1, l2, l3, l4 = feats
        p = self.fusion[3](l4, None, l3.shape[-2:])
        p = self.fusion[2](p, l3, l2.shape[-2:])
        p = self.fusion[1](p, l2, l1.shape[-2:])
        p = self.fusion[0](p, l1, (2 * l1.shape[-2], 2 * l1.shape[-1]))
        return self.head1(p)


def hooked_tokens(model: Any, pixels: torch.Tensor, hooks: list[int]) -> tuple[list[torch.Tensor], tuple]:
    """Outputs of the stock blocks ``hooks`` (the last block included) of the frozen tower, and the grid."""
    visual = dense._visual(model)
    last = len(visual.transformer.resblocks) - 1
    early = sorted({i for i in hooks if i < last})
    x, inter, grid = dense.visual_tokens(model, pixels, early)
    outputs = dict(zip(early, inter, strict=True))
    if last in hooks:
        outputs[last] = visual.transformer.resblocks[-1](x)
    return [outputs[i] for i in hooks], grid


def lseg_logits_crops(model: Any, head: LSegHead, crops: torch.Tensor,
                      text_emb: torch.Tensor) -> torch.Tensor:
    """LSeg logits ``[B, N, H, W]`` (crop resolution) = normalised pixel · normalised text / 0.07."""
    with torch.no_grad(), dense._autocast(model):
        hooked, grid = hooked_tokens(model, crops, head.cfg.hooks)
    hooked = [h.float() for h in hooked]
    pix = F.normalize(head(hooked, grid), dim=1)
    text = F.normalize(text_emb.float(), dim=-1)
    logits = torch.einsum("bchw,nc->bnhw", pix, text) / LSEG_TEMPERATURE
    return F.interpolate(logits, size=crops.shape[-2:], mode="bilinear", align_corners=True)


def lseg_logits(
    model: Any, head: LSegHead, image, text_emb: torch.Tensor, *, stride: int | tuple[int, int] | None = None,
    short_side: int | None = None, full_size: bool = True,
) -> torch.Tensor:
    """Per-pixel LSeg logits ``[N, H, W]`` at the image's size (sliding windows as ``dense.dense_logits``;
    ``full_size=False`` stops at the working resolution)."""
    return lseg_logits_batch(model, head, [image], text_emb, stride=stride, short_side=short_side,
                             full_size=full_size)[0]


def lseg_logits_batch(
    model: Any, head: LSegHead, images: list, text_emb: torch.Tensor, *,
    stride: int | tuple[int, int] | None = None, short_side: int | None = None, full_size: bool = True,
) -> list[torch.Tensor]:
    """:func:`lseg_logits` of several images; their windows share the backbone's batches."""
    head.eval()
    return slide_images(model, images, lambda c: lseg_logits_crops(model, head, c, text_emb),
                        patch=dense.patch_grid(model), stride=stride, short_side=short_side, full_size=full_size)


def new_head(model: Any, *, clip_model: str = "", features: int = 32,
             dims: list[int] | None = None) -> LSegHead:
    """A freshly initialised head sized for ``model``'s image tower."""
    visual = dense._visual(model)
    layers = len(visual.transformer.resblocks)
    out_dim = visual.proj.shape[1] if visual.proj is not None else visual.transformer.width
    cfg = LSegConfig(width=visual.transformer.width, out_dim=int(out_dim), layers=layers,
                     hooks=LSegConfig.default_hooks(layers), features=features,
                     factors=LSegConfig.default_factors(dense.patch_grid(model)[0]),
                     dims=dims or [32, 32, 64, 64], clip_model=clip_model)
    return LSegHead(cfg)


def save_head(head: LSegHead, folder: str | Path) -> Path:
    """Write ``lseg_head.safetensors`` (fp16) + ``lseg_config.json`` into ``folder`` atomically."""
    from safetensors.torch import save

    from clipkit.writers import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in head.state_dict().items()
             if v.is_floating_point()}
    state.update({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()
                  if not v.is_floating_point()})
    atomic_write_bytes(folder / HEAD_WEIGHTS, save(state))
    atomic_write_text(folder / HEAD_CONFIG, json.dumps(asdict(head.cfg), indent=2) + "\n")
    return folder


def bundled_heads() -> dict[str, Path]:
    """name → folder of every head shipped under ``clipkit/assets/`` (those holding ``lseg_config.json``)."""
    assets = Path(__file__).parent / "assets"
    return {p.parent.name: p.parent for p in sorted(assets.glob(f"*/{HEAD_CONFIG}"))}


def load_head(spec: str | Path, model: Any | None = None) -> LSegHead:
    """Load a head by bundled name (``lseg-shapes``) or path (its folder, or its ``.safetensors``).

    Checks that the head fits ``model``'s image tower (width, depth, joint dimension), else ModelError.
    """
    from safetensors.torch import load_file

    heads = bundled_heads()
    path = heads.get(str(spec)) or Path(spec)
    weights = path / HEAD_WEIGHTS
    if path.is_file():  # exactly the weights file named, with the config beside it
        path, weights = path.parent, path
    cfg_path = path / HEAD_CONFIG
    if not cfg_path.is_file():
        names = ", ".join(heads) or "none"
        raise ModelError(f"no LSeg head {str(spec)!r} (bundled heads: {names}; "
                         f"or pass a folder with {HEAD_CONFIG})")
    try:
        cfg = LSegConfig(**json.loads(cfg_path.read_text()))
        head = LSegHead(cfg)
        state = load_file(str(weights))
        head.load_state_dict({k: v.to(head.state_dict()[k].dtype) for k, v in state.items()})
    except (OSError, TypeError, KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load LSeg head from {path}: {first}") from exc
    if model is not None:
        visual = dense._visual(model)
        out_dim = visual.proj.shape[1] if visual.proj is not None else visual.transformer.width
        if (visual.transformer.width, len(visual.transformer.resblocks), out_dim) != (
            cfg.width, cfg.layers, cfg.out_dim
        ):
            raise ModelError(
                f"LSeg head {str(spec)!r} was trained for {cfg.clip_model or 'another model'} and does not "
                "fit this model's image tower; pass the matching --model"
            )
        trained_on = cfg.meta.get("clip_identity")
        identity = getattr(model, "identity", None)
        if trained_on and identity and trained_on != identity:
            # same architecture, other weights: the head still runs but its features no longer line up
            logging.getLogger("clipkit").warning(
                "LSeg head %s was trained on other weights of %s than the ones loaded; retrain it with "
                "'clipkit world train-lseg' for this model", spec, cfg.clip_model or "this model")
        device = getattr(model, "device", None) or next(dense._clip_module(model).parameters()).device
        head = head.to(device)
    return head.eval()
