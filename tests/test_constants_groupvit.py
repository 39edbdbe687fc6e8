"""GroupViT's training-time maths, which the golden (eval-mode) references never run, checked against the
formulas on seeded random draws: stochastic depth ``x · keep / (1 − p)`` with one keep draw per sample; the
Gumbel-softmax ``softmax((logits + g) / τ)``, ``g = −log(−log u)``, ``u ~ U(1e-10, 1 − 1e-7)``, made one-hot with
a straight-through gradient; the assignment attention using it over the *group* axis with its own τ in training
and the plain softmax when ``hard=False``.
"""

from __future__ import annotations

import pytest
import torch

from clipkit.groupvit.layers import AssignAttention, DropPath, gumbel_softmax, straight_through


def test_drop_path_scales_kept_samples_and_drops_whole_samples():
    x = torch.randn(64, 3, 5) + 3.0
    layer = DropPath(0.25).train()
    torch.manual_seed(0)
    keep = torch.rand(64, 1, 1) >= 0.25
    torch.manual_seed(0)
    out = layer(x)
    torch.testing.assert_close(out, x * keep / 0.75)
    assert 0 < int(keep.sum()) < 64  # both outcomes occur in this draw
    assert torch.equal(layer.eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_gumbel_softmax_formula(tau):
    logits = torch.randn(2, 5, 7)
    torch.manual_seed(1)
    u = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
    expected = ((logits - torch.log(-torch.log(u))) / tau).softmax(1)
    torch.manual_seed(1)
    soft = gumbel_softmax(logits, dim=1, tau=tau, hard=False)
    torch.testing.assert_close(soft, expected)
    torch.manual_seed(1)
    hard = gumbel_softmax(logits, dim=1, tau=tau)
    torch.testing.assert_close(hard, torch.nn.functional.one_hot(expected.argmax(1), 5).permute(0, 2, 1).float())


def test_gumbel_noise_is_clamped_away_from_zero_and_one():
    logits = torch.tensor([[[19.0], [0.0]]])  # offsets the two noise values' gap, so both clamps show
    torch.manual_seed(0)
    real_rand_like = torch.rand_like
    try:  # draws exactly 0 and 1: the clamp keeps the noise finite
        torch.rand_like = lambda t: torch.tensor([[[0.0], [1.0]]])
        y = gumbel_softmax(logits, dim=1, hard=False)
    finally:
        torch.rand_like = real_rand_like
    g = -torch.log(-torch.log(torch.tensor([1e-10, 1.0 - 1e-7])))
    torch.testing.assert_close(y[0, :, 0], (logits[0, :, 0] + g).softmax(0))
    assert 0.05 < float(y[0, 0, 0]) < 0.95


def test_straight_through_has_the_soft_gradient():
    y = torch.tensor([[0.2, 0.5, 0.3]], requires_grad=True)
    out = straight_through(y, dim=1)
    assert out.tolist() == [[0.0, 1.0, 0.0]]
    (out * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert y.grad.tolist() == [[1.0, 2.0, 3.0]]


def _assign(hard: bool, tau: float = 0.7):
    torch.manual_seed(0)
    return AssignAttention(8, hard=hard, gumbel_tau=tau, assign_eps=1.0)


def test_assignment_in_training_uses_gumbel_over_groups_with_its_tau():
    att = _assign(True).train()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
    raw = (att.q_proj(q) @ att.k_proj(k).transpose(-2, -1)) * 8**-0.5
    torch.manual_seed(5)
    attn = gumbel_softmax(raw, dim=-2, tau=0.7, hard=True)
    expected = att.proj((attn / (attn.sum(-1, keepdim=True) + 1.0)) @ att.v_proj(k))
    torch.manual_seed(5)
    out, (hard, soft) = att(q, k)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(hard, attn)
    torch.testing.assert_close(soft, raw.softmax(-2))
    assert torch.all(hard.sum(dim=1) == 1)  # every token picks exactly one group
    # the forward pass is one-hot whatever τ is; the straight-through gradient carries τ
    qa, qb = q.clone().requires_grad_(True), q.clone().requires_grad_(True)
    torch.manual_seed(5)
    att(qa, k)[0].square().sum().backward()
    raw_b = (att.q_proj(qb) @ att.k_proj(k).transpose(-2, -1)) * 8**-0.5
    torch.manual_seed(5)
    attn_b = gumbel_softmax(raw_b, dim=-2, tau=0.7, hard=True)
    att.proj((attn_b / (attn_b.sum(-1, keepdim=True) + 1.0)) @ att.v_proj(k)).square().sum().backward()
    torch.testing.assert_close(qa.grad, qb.grad)


def test_soft_assignment_when_hard_is_off():
    att = _assign(False).eval()
    q, k = torch.randn(1, 3, 8), torch.randn(1, 6, 8)
    raw = (att.q_proj(q) @ att.k_proj(k).transpose(-2, -1)) * 8**-0.5
    soft = raw.softmax(-2)
    out, (hard, soft_out) = att(q, k)
    torch.testing.assert_close(hard, soft)
    torch.testing.assert_close(soft_out, soft)
    torch.testing.assert_close(out, att.proj((soft / (soft.sum(-1, keepdim=True) + 1.0)) @ att.v_proj(k)))


def test_every_layer_norm_uses_the_configured_eps():
    from clipkit.groupvit.config import VisionConfig
    from clipkit.groupvit.model import VisionTransformer

    cfg = VisionConfig(image_size=16, patch_size=4, width=8, depths=(1, 1, 1), num_heads=(1, 1, 1),
                       num_group_tokens=(4, 2, 0), num_output_groups=(4, 2), layer_norm_eps=0.0123)
    norms = [m for m in VisionTransformer(cfg).modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) > 10 and all(m.eps == 0.0123 for m in norms)


def test_grouping_block_maps_group_counts():
    """S_in group tokens become S_out segment tokens (the token-mixing MLP's output size), even when they
    differ (the official configs happen to use S_in = S_out)."""
    from clipkit.groupvit.layers import GroupingBlock

    torch.manual_seed(0)
    block = GroupingBlock(8, 1, num_group_token=6, num_output_group=3, mlp_ratio=2.0, assign_mlp_ratio=(0.5, 2.0),
                          hard=True, gumbel_tau=1.0, assign_eps=1.0, eps=1e-5).eval()
    out, (hard, soft) = block(torch.randn(2, 10, 8), torch.randn(2, 6, 8))
    assert out.shape == (2, 3, 8) and hard.shape == soft.shape == (2, 3, 10)
