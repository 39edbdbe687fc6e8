"""ContiguousAttention (clipkit.attention) computes what nn.MultiheadAttention computes, and the registry's
models use it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from clipkit.attention import ContiguousAttention, contiguous_attention


def _pair(heads: int, dim: int = 24) -> tuple[nn.MultiheadAttention, nn.MultiheadAttention]:
    torch.manual_seed(heads)
    stock = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():  # perturb every weight: a projection mix-up must show
        for p in stock.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    fast = copy.deepcopy(stock)
    assert contiguous_attention(fast) == 1 and type(fast) is ContiguousAttention
    return stock, fast


@pytest.mark.parametrize("heads", [3, 4])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_same_outputs_as_the_stock_module(heads, masked, grad):
    stock, fast = _pair(heads)
    x = torch.randn(5, 9, 24)
    mask = torch.full((9, 9), float("-inf")).triu(1) if masked else None  # causal, additive (the text tower's)
    with torch.set_grad_enabled(grad):
        ref = stock(x, x, x, need_weights=False, attn_mask=mask)[0]
        out = fast(x, x, x, need_weights=False, attn_mask=mask)[0]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_gradients_match_the_stock_module():
    stock, fast = _pair(3)
    x = torch.randn(2, 7, 24)
    stock.train(), fast.train()  # dropout is 0: training mode changes only which path runs
    stock(x, x, x, need_weights=False)[0].square().sum().backward()
    fast(x, x, x, need_weights=False)[0].square().sum().backward()
    for (name, a), b in zip(stock.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_other_calls_go_to_the_stock_code():
    stock, fast = _pair(3)
    x, y = torch.randn(2, 6, 24), torch.randn(2, 4, 24)
    out, weights = fast(x, x, x, need_weights=True)  # attention weights asked for
    assert weights is not None and weights.shape == (2, 6, 6)
    torch.testing.assert_close(out, stock(x, x, x, need_weights=True)[0])
    torch.testing.assert_close(fast(x, y, y)[0], stock(x, y, y)[0])  # cross-attention
    pad = torch.tensor([[False] * 5 + [True], [False] * 6])
    torch.testing.assert_close(fast(x, x, x, key_padding_mask=pad, need_weights=False)[0],
                               stock(x, x, x, key_padding_mask=pad, need_weights=False)[0])
    assert fast.state_dict().keys() == stock.state_dict().keys()


def test_registry_models_use_it_and_encode_as_before():
    from clipkit.registry import load_model

    model = load_model(None, device="cpu")
    kinds = {type(m) for m in model.model.modules() if isinstance(m, nn.MultiheadAttention)}
    assert kinds == {ContiguousAttention}
    stock = copy.deepcopy(model.model)
    for m in stock.modules():
        if type(m) is ContiguousAttention:
            m.__class__ = nn.MultiheadAttention
    x = torch.randn(4, 3, *model.image_size)
    with torch.inference_mode():
        torch.testing.assert_close(model.model.encode_image(x), stock.encode_image(x), rtol=1e-5, atol=1e-5)
        tokens = model.tokenizer(["a red circle", "a blue square on the left"])
        torch.testing.assert_close(model.model.encode_text(tokens), stock.encode_text(tokens), rtol=1e-5,
                                   atol=1e-5)
