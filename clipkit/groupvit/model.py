"""GroupViT: image encoder with learnable group tokens, CLIP-style text tower, projection heads.

Architecture as NVlabs/GroupViT defines it (``models/group_vit.py``, ``models/transformer.py``,
``models/multi_label_contrastive.py``); parameter names follow the official checkpoint
(``img_encoder.*``, ``text_encoder.*``, ``img_projector.*``, ``text_projector.*``, ``logit_scale``), except that
the projection MLPs use ``nn.Linear`` where the official code uses 1x1 ``Conv1d`` (same maths; the loader
squeezes the kernel axis). Hugging Face port weights load through :mod:`clipkit.groupvit.weights`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig
from clipkit.groupvit.layers import GroupingBlock, GroupingLayer


class PatchEmbed(nn.Module):
    """Non-overlapping patches: ``[B, 3, H, W] -> [B, (H/p)(W/p), C]`` then LayerNorm.

    The convolution runs on channels-last pixels (oneDNN's fast layout on CPU, the same numbers), so its output
    flattens to contiguous ``[B, N, C]`` tokens without a copy.
    """

    def __init__(self, patch_size: int, dim: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


@dataclass
class VisionOutput:
    """Image encoder output.

    tokens: ``[B, G, C]`` final segment tokens after the last LayerNorm (G = last stage's group count).
    pooled: ``[B, C]`` their average (the image feature before projection).
    hard / soft: per grouping stage, assignment ``[B, S_i, N_i]`` (group x input token); stage 0's inputs are
    the ``h x w`` patches (row-major), stage i's inputs are stage i-1's groups.
    grid: ``(h, w)`` patch grid of this input.
    stage_tokens: per grouping stage, the segment tokens it produced ``[B, S_i, C]`` (before later blocks).
    """

    tokens: Tensor
    pooled: Tensor
    hard: list[Tensor]
    soft: list[Tensor]
    grid: tuple[int, int]
    stage_tokens: list[Tensor]


class VisionTransformer(nn.Module):
    """The GroupViT image encoder (official ``GroupViT`` class, embed_factors all 1)."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, eps = cfg.width, cfg.layer_norm_eps
        self.patch_embed = PatchEmbed(cfg.patch_size, c, eps)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid, c))
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.layers = nn.ModuleList()
        n_stages = len(cfg.depths)
        for i in range(n_stages):
            downsample = None
            if i < n_stages - 1:
                downsample = GroupingBlock(
                    c, cfg.num_heads[i], cfg.num_group_tokens[i], cfg.num_output_groups[i], cfg.mlp_ratio,
                    cfg.assign_mlp_ratio, cfg.hard_assignment, cfg.gumbel_tau, cfg.assign_eps, eps,
                )
            start = sum(cfg.depths[:i])
            self.layers.append(
                GroupingLayer(
                    c, cfg.depths[i], cfg.num_heads[i], cfg.num_group_tokens[i],
                    cfg.num_group_tokens[i - 1] if i > 0 else 0, cfg.mlp_ratio,
                    dpr[start : start + cfg.depths[i]], eps, downsample,
                )
            )
        self.norm = nn.LayerNorm(c, eps=eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # official: trunc_normal(0.02) for Linear weights and pos_embed, zero biases, LayerNorm 1/0; group tokens
        # trunc_normal(0.02) unless a group projector feeds them (then zero)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for layer in self.layers:
            if layer.group_token is not None and layer.group_projector is None:
                nn.init.trunc_normal_(layer.group_token, std=0.02)

    def pos_embed_for(self, h: int, w: int) -> Tensor:
        """Positional embedding for an ``h x w`` grid: bicubic resize of the square training grid.

        Without autograd the last resize is reused while ``pos_embed`` is unchanged (same grid, same version of
        the parameter): a stream of same-shape images resizes it once.
        """
        n = self.pos_embed.shape[1]
        side = math.isqrt(n)
        if h * w == n and h == w:
            return self.pos_embed
        key = (h, w, self.pos_embed._version, self.pos_embed.data_ptr(), self.pos_embed.device, self.pos_embed.dtype)
        cached = self.__dict__.get("_pos_cache")
        if not torch.is_grad_enabled() and cached is not None and cached[0] == key:
            return cached[1]
        grid = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        resized = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        if not torch.is_grad_enabled():
            self.__dict__["_pos_cache"] = (key, resized)
        return resized

    def forward(self, pixels: Tensor) -> VisionOutput:
        """``pixels [B, 3, H, W]`` (normalised; H, W multiples of the patch size) -> :class:`VisionOutput`."""
        x, grid = self.patch_embed(pixels)
        x = x + self.pos_embed_for(*grid)
        group_token = None
        hard: list[Tensor] = []
        soft: list[Tensor] = []
        stage_tokens: list[Tensor] = []
        for layer in self.layers:
            x, group_token, attn = layer(x, group_token)
            if attn is not None:
                hard.append(attn[0])
                soft.append(attn[1])
                stage_tokens.append(x)
        x = self.norm(x)
        return VisionOutput(tokens=x, pooled=x.mean(dim=1), hard=hard, soft=soft, grid=grid,
                            stage_tokens=stage_tokens)


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP text block: ``x + attn(ln_1(x))`` (causal), ``x + mlp(ln_2(x))`` with QuickGELU (official) or GELU."""

    def __init__(self, width: int, heads: int, eps: float, mlp_width: int | None = None,
                 act: str = "quick_gelu") -> None:
        super().__init__()
        hidden = mlp_width or 4 * width
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU() if act == "quick_gelu" else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """Causal text transformer; the feature is the final-LayerNorm state at the EOT token (highest token id)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, w))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            ResidualAttentionBlock(w, cfg.heads, cfg.layer_norm_eps, cfg.mlp_width, cfg.hidden_act)
            for _ in range(cfg.layers)
        )
        self.ln_final = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        # CLIP initialisation (official models/transformer.py)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std, attn_std, fc_std = (w**-0.5) * ((2 * cfg.layers) ** -0.5), w**-0.5, (2 * w) ** -0.5
        for blk in self.transformer.resblocks:
            nn.init.normal_(blk.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(blk.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens [B, L]`` int64 (L <= context_length) -> ``[B, width]``."""
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        mask = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        for blk in self.transformer.resblocks:
            x = blk(x, mask)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]


class ProjectMLP(nn.Module):
    """Projection head: Linear -> BatchNorm1d -> ReLU -> Linear (official ``ProjectMLP``, 2 layers)."""

    def __init__(self, in_dim: int, inner_dim: int, out_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        hidden: list[nn.Module] = []
        for i in range(num_layers - 1):
            hidden += [nn.Linear(in_dim if i == 0 else inner_dim, inner_dim), nn.BatchNorm1d(inner_dim), nn.ReLU()]
        self.linear_hidden = nn.Sequential(*hidden)
        self.linear_out = nn.Linear(in_dim if num_layers == 1 else inner_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C]`` or ``[B, L, C]`` -> same leading shape with ``out_dim`` channels."""
        shape = x.shape
        y = self.linear_out(self.linear_hidden(x.reshape(-1, shape[-1])))
        return y.reshape(*shape[:-1], -1)


class GroupViT(nn.Module):
    """Image encoder + text encoder + projection heads + learnable temperatures.

    ``encode_image`` / ``encode_text`` return *unnormalised* projected features ``[B, D]`` (D = projection_dim),
    as the official ``MultiLabelContrastive`` does; callers L2-normalise.
    """

    def __init__(self, cfg: GroupViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.img_encoder = VisionTransformer(cfg.vision)
        self.text_encoder = TextTransformer(cfg.text)
        n = cfg.proj_num_layers
        self.img_projector = ProjectMLP(cfg.vision.width, cfg.projection_inner_dim, cfg.projection_dim, n)
        self.text_projector = ProjectMLP(cfg.text.width, cfg.projection_inner_dim, cfg.projection_dim, n)
        init = math.log(1.0 / cfg.contrast_temperature)
        self.logit_scale = nn.Parameter(torch.tensor(init))
        # separate temperature for the multi-label loss (official share_temperature=False)
        self.multi_label_logit_scale = nn.Parameter(torch.tensor(init))

    @property
    def logit_scale_value(self) -> float:
        """``exp(logit_scale)`` clamped at 100, as every official use of it is."""
        return float(self.logit_scale.detach().exp().clamp(max=100.0))

    def encode_image(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W] -> [B, D]`` projected average of the final segment tokens."""
        return self.img_projector(self.img_encoder(pixels).pooled)

    def encode_image_groups(self, pixels: Tensor) -> tuple[Tensor, Tensor, VisionOutput]:
        """Returns (image feature ``[B, D]``, projected group features ``[B, G, D]``, the encoder output)."""
        out = self.img_encoder(pixels)
        return self.img_projector(out.pooled), self.img_projector(out.tokens), out

    def encode_text(self, tokens: Tensor) -> Tensor:
        """``[B, L]`` int64 token ids (CLIP BPE, EOT = 49407) -> ``[B, D]``."""
        return self.text_projector(self.text_encoder(tokens))
