"""Self-attention without PyTorch's per-token matrix products: a speed fix with the same maths.

``nn.MultiheadAttention(batch_first=True)`` takes its fused inference path only for an even number of heads
(and no autograd). Otherwise it transposes its input to ``[L, B, E]`` and projects that transposed *view*; on
CPU, ``torch.matmul`` runs a non-contiguous 3-D input as ``L`` separate ``[B, E] × [E, 3E]`` products. For a small
tower such as shapes-clip (3 heads, 145 tokens) that is a fifth of ``encode_image`` and of a dense pass.
:class:`ContiguousAttention` projects the contiguous ``[B, L, E]`` input instead and calls
``scaled_dot_product_attention``: the same parameters, state dict and numbers (tests compare with the stock
module), taken only where the stock module would not use its fused path anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ContiguousAttention", "contiguous_attention"]


class ContiguousAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose batch-first self-attention (no weights returned, no padding mask, an
    additive float ``[L, L]`` mask or none) runs on contiguous tensors; everything else goes to the stock code."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self._handled(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        b, n, e = query.shape
        heads = self.num_heads
        q, k, v = (t.reshape(b, n, heads, e // heads).transpose(1, 2)  # [B, heads, L, head_dim]
                   for t in F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, e)), None

    def _handled(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 key_padding_mask: torch.Tensor | None, need_weights: bool, attn_mask: torch.Tensor | None,
                 is_causal: bool) -> bool:
        stock_is_fused = self.num_heads % 2 == 0 and not self.training and not torch.is_grad_enabled()
        return (not stock_is_fused and query is key and key is value and self.batch_first and query.dim() == 3
                and not need_weights and key_padding_mask is None and not is_causal and self._qkv_same_embed_dim
                and self.in_proj_bias is not None and self.bias_k is None and not self.add_zero_attn
                and (attn_mask is None or (attn_mask.dim() == 2 and attn_mask.is_floating_point())))


def contiguous_attention(model: nn.Module) -> int:
    """Make every stock ``nn.MultiheadAttention`` inside ``model`` a :class:`ContiguousAttention` (in place: same
    parameters and state dict); returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.MultiheadAttention:
            module.__class__ = ContiguousAttention
            switched += 1
    return switched
