"""GroupViT building blocks: attention blocks, the assignment attention and the Grouping Block.

Written from the paper (Xu et al., CVPR 2022, "GroupViT: Semantic Segmentation Emerges from Text Supervision")
and checked against NVlabs/GroupViT ``models/group_vit.py`` (module names follow it, so an NVlabs ``.pth`` maps
onto ours with few renames) and the Hugging Face port (``transformers/models/groupvit/modeling_groupvit.py``).
Token tensors are ``[B, L, C]`` float32 throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """fc1 -> GELU (exact, erf) -> fc2 on the last axis."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MixerMlp(Mlp):
    """An Mlp across the token axis: ``[B, S_in, C] -> [B, S_out, C]`` (mixes group tokens, not channels)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (training only); the official model uses drop_path_rate 0.1."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


def _heads(x: Tensor, n: int) -> Tensor:
    """``[B, L, C] -> [B, n, L, C/n]``."""
    b, length, c = x.shape
    return x.view(b, length, n, c // n).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (official ``Attention(qkv_fuse=True)``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(*(_heads(t, self.num_heads) for t in (q, k, v)))
        return self.proj(out.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    """Multi-head cross-attention, separate q/k/v projections (official ``Attention(qkv_fuse=False)``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: Tensor, key: Tensor, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``kv``: ``(k_proj(key), v_proj(key))`` when the caller has them (:class:`GroupingBlock`)."""
        n = self.num_heads
        k, v = kv if kv is not None else (self.k_proj(key), self.v_proj(key))
        out = F.scaled_dot_product_attention(_heads(self.q_proj(query), n), _heads(k, n), _heads(v, n))
        return self.proj(out.transpose(1, 2).flatten(2))


class AttnBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossAttnBlock(nn.Module):
    """The Grouping Block's pre-assignment block with post-norm: group tokens attend to image tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim, eps=eps)

    def forward(self, query: Tensor, key: Tensor, kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = query + self.attn(query, key, kv)
        x = x + self.mlp(self.norm2(x))
        return self.norm_post(x)


def gumbel_softmax(logits: Tensor, dim: int, tau: float = 1.0, hard: bool = True) -> Tensor:
    """Gumbel-softmax along ``dim``; ``hard`` gives a one-hot forward with the soft straight-through gradient."""
    u = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
    y = ((logits - torch.log(-torch.log(u))) / tau).softmax(dim)
    return straight_through(y, dim) if hard else y


def straight_through(y_soft: Tensor, dim: int) -> Tensor:
    """One-hot of the argmax along ``dim`` in the forward pass, gradient of ``y_soft`` in the backward pass."""
    index = y_soft.max(dim, keepdim=True).indices  # argmax's index (the first maximum), 5x faster on a strided axis
    y_hard = torch.zeros_like(y_soft).scatter_(dim, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


class AssignAttention(nn.Module):
    """Single-head assignment of image tokens to groups.

    ``raw = q(groups) k(tokens)^T / sqrt(C)`` is ``[B, S, N]``; the assignment normalises over the *group* axis
    (each token picks one group): hard Gumbel-softmax while training, hard argmax at eval (both straight-through);
    each group then averages its tokens' values, dividing by (assigned count + ``assign_eps``).
    Returns the output ``[B, S, C]`` and ``(hard [B, S, N], soft [B, S, N])``; ``soft`` is the plain softmax over
    groups that the official segmentation evaluation multiplies across stages.
    """

    def __init__(self, dim: int, hard: bool, gumbel_tau: float, assign_eps: float) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.hard = hard
        self.gumbel_tau = gumbel_tau
        self.assign_eps = assign_eps

    def forward(self, query: Tensor, key: Tensor, kv: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``kv``: ``(k_proj(key), v_proj(key))`` when the caller has them (:class:`GroupingBlock`)."""
        k, v = kv if kv is not None else (self.k_proj(key), self.v_proj(key))
        raw = (self.q_proj(query) @ k.transpose(-2, -1)) * self.scale
        soft = raw.softmax(dim=-2)
        if self.hard and self.training:
            attn = gumbel_softmax(raw, dim=-2, tau=self.gumbel_tau, hard=True)
        elif self.hard:
            attn = straight_through(soft, dim=-2)
        else:
            attn = soft
        hard = attn
        attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
        return self.proj(attn @ v), (hard, soft)


class GroupingBlock(nn.Module):
    """Merge ``N`` image tokens into ``num_output_group`` segment tokens.

    The ``S_in`` group tokens are mixed into ``S_out`` new ones (token-mixing MLP), attend to the image tokens
    (pre-assignment cross-attention block), then every image token is hard-assigned to one of them
    (:class:`AssignAttention`); ``out = proj(assigned mean) + group token``, then ``out + mlp(norm(out))``.
    Input ``x [B, N, C]``, ``group_tokens [B, S_in, C]``; output ``[B, S_out, C]`` and the assignment maps.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_group_token: int,
        num_output_group: int,
        mlp_ratio: float,
        assign_mlp_ratio: tuple[float, float],
        hard: bool,
        gumbel_tau: float,
        assign_eps: float,
        eps: float,
    ) -> None:
        super().__init__()
        tokens_dim, channels_dim = (int(r * dim) for r in assign_mlp_ratio)
        self.norm_tokens = nn.LayerNorm(dim, eps=eps)
        self.mlp_inter = Mlp(num_group_token, tokens_dim, num_output_group)
        self.norm_post_tokens = nn.LayerNorm(dim, eps=eps)
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.pre_assign_attn = CrossAttnBlock(dim, num_heads, mlp_ratio, eps)
        self.assign = AssignAttention(dim, hard, gumbel_tau, assign_eps)
        self.norm_new_x = nn.LayerNorm(dim, eps=eps)
        self.mlp_channels = Mlp(dim, channels_dim, dim)

    def forward(self, x: Tensor, group_tokens: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        group_tokens = self.norm_tokens(group_tokens)
        x = self.norm_x(x)
        projected = self.mlp_inter(group_tokens.transpose(1, 2)).transpose(1, 2)
        k_pre, v_pre, k_assign, v_assign = self._image_token_projections(x)
        projected = self.pre_assign_attn(self.norm_post_tokens(projected), x, (k_pre, v_pre))
        new_x, attn = self.assign(projected, x, (k_assign, v_assign))
        new_x = new_x + projected
        return new_x + self.mlp_channels(self.norm_new_x(new_x)), attn

    def _image_token_projections(self, x: Tensor) -> tuple[Tensor, ...]:
        """The pre-assignment keys and values and the assignment keys and values of the image tokens ``x``
        ``[B, N, C]``, four ``[B, N, C]`` views of one matrix product: the same numbers as four, in half the time
        (N is in the thousands, C small)."""
        layers = (self.pre_assign_attn.attn.k_proj, self.pre_assign_attn.attn.v_proj, self.assign.k_proj,
                  self.assign.v_proj)
        out = F.linear(x, torch.cat([m.weight for m in layers]), torch.cat([m.bias for m in layers]))
        return out.split(x.shape[-1], dim=-1)


class GroupingLayer(nn.Module):
    """One stage: ``depth`` transformer blocks over [image tokens ; group tokens], then the Grouping Block.

    Group tokens of stage > 0 are the learned tokens plus a token-mixing projection of the previous stage's
    group tokens (``group_projector``; the learned ones then start at zero, as in the official code).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        num_group_token: int,
        num_prev_group_token: int,
        mlp_ratio: float,
        drop_path: list[float],
        eps: float,
        downsample: GroupingBlock | None,
    ) -> None:
        super().__init__()
        self.num_group_token = num_group_token
        self.group_token = nn.Parameter(torch.zeros(1, num_group_token, dim)) if num_group_token else None
        self.blocks = nn.ModuleList(AttnBlock(dim, num_heads, mlp_ratio, drop_path[i], eps) for i in range(depth))
        self.downsample = downsample
        self.group_projector = None
        if num_group_token and num_prev_group_token:
            self.group_projector = nn.Sequential(
                nn.LayerNorm(dim, eps=eps), MixerMlp(num_prev_group_token, dim // 2, num_group_token)
            )

    def forward(
        self, x: Tensor, prev_group_token: Tensor | None
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor] | None]:
        """Returns (new image tokens, this stage's group tokens, (hard, soft) assignment or None)."""
        group_token = None
        if self.group_token is not None:
            group_token = self.group_token.expand(x.shape[0], -1, -1)
            if self.group_projector is not None:
                group_token = group_token + self.group_projector(prev_group_token)
            x = torch.cat([x, group_token], dim=1)
        for blk in self.blocks:
            x = blk(x)
        if self.group_token is not None:
            x, group_token = x[:, : -self.num_group_token], x[:, -self.num_group_token :]
        attn = None
        if self.downsample is not None:
            x, attn = self.downsample(x, group_token)
        return x, group_token, attn
