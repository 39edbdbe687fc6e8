"""GroupViT architecture and losses: grouping behaviour, gradients, shapes, loss definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig, from_hf_config, to_hf_config
from clipkit.groupvit.layers import gumbel_softmax, straight_through
from clipkit.groupvit.model import GroupViT
from clipkit.training.groupvit_losses import image_text_contrastive, multi_label_contrastive


def tiny(**vision) -> GroupViT:
    v = {"image_size": 32, "patch_size": 4, "width": 32, "depths": (1, 1, 1), "num_heads": (2, 2, 2),
         "num_group_tokens": (8, 4, 0), "num_output_groups": (8, 4), "drop_path_rate": 0.0, **vision}
    cfg = GroupViTConfig(vision=VisionConfig(**v), text=TextConfig(context_length=16, width=32, layers=1, heads=2),
                         projection_dim=16, projection_inner_dim=32)
    torch.manual_seed(0)
    return GroupViT(cfg)


def test_official_defaults():
    cfg = GroupViTConfig()
    assert cfg.vision.num_group_tokens == (64, 8, 0) and cfg.vision.num_output_groups == (64, 8)
    assert cfg.vision.depths == (6, 3, 3) and cfg.vision.width == 384 and cfg.vision.patch_size == 16
    assert cfg.text.width == 256 and cfg.text.layers == 12 and cfg.projection_dim == 256
    assert cfg.contrast_temperature == 0.07 and cfg.multi_label == 3
    assert math.isclose(tiny().logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)


def test_straight_through_is_one_hot_forward_soft_backward():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    y = straight_through(logits.softmax(dim=1), dim=1)
    assert torch.equal(y.sum(dim=1), torch.ones(2, 7))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    (y * torch.randn_like(y)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_softmax_samples_vary_but_stay_one_hot():
    torch.manual_seed(0)
    logits = torch.zeros(1, 4, 200)  # uniform: Gumbel noise alone decides
    a = gumbel_softmax(logits, dim=1)
    b = gumbel_softmax(logits, dim=1)
    assert torch.equal(a.sum(dim=1), torch.ones(1, 200))
    assert (a.argmax(dim=1) != b.argmax(dim=1)).float().mean() > 0.5
    counts = torch.bincount(a.argmax(dim=1).flatten(), minlength=4)
    assert counts.min() > 20  # all four groups get picked


def test_grouping_stages_shapes_and_hard_assignment():
    model = tiny().eval()
    out = model.img_encoder(torch.randn(2, 3, 32, 32))
    assert out.grid == (8, 8)
    assert [s.shape for s in out.soft] == [torch.Size([2, 8, 64]), torch.Size([2, 4, 8])]
    for hard, soft in zip(out.hard, out.soft, strict=True):
        assert torch.equal(hard.sum(dim=1), torch.ones_like(hard.sum(dim=1)))  # each token -> exactly one group
        torch.testing.assert_close(soft.sum(dim=1), torch.ones_like(soft.sum(dim=1)))
        assert torch.equal(hard.argmax(dim=1), soft.argmax(dim=1))  # eval: hard = argmax of the soft map
    assert out.tokens.shape == (2, 4, 32)


def test_training_is_stochastic_and_gradients_reach_the_assignment():
    model = tiny().train()
    x = torch.randn(2, 3, 32, 32)
    a = model.img_encoder(x).hard[0].argmax(dim=1)
    b = model.img_encoder(x).hard[0].argmax(dim=1)
    assert not torch.equal(a, b)  # Gumbel noise while training
    model.zero_grad()
    model.encode_image(x).pow(2).sum().backward()
    q = model.img_encoder.layers[0].downsample.assign.q_proj.weight.grad
    assert q is not None and q.abs().sum() > 0  # straight-through: the hard argmax still passes gradients
    model.eval()
    e1, e2 = model.encode_image(x), model.encode_image(x)
    assert torch.equal(e1, e2)


def test_other_input_sizes_interpolate_positions():
    model = tiny().eval()
    out = model.img_encoder(torch.randn(1, 3, 48, 32))
    assert out.grid == (12, 8) and out.soft[0].shape == (1, 8, 96)


def test_resized_positions_are_reused_only_while_the_parameter_is_unchanged():
    """Inference reuses the last resize of the positional grid; new weights (an optimiser step, a loaded state)
    must not see a stale one, and with autograd the resize is always recomputed (gradients reach pos_embed)."""
    model = tiny().eval()
    enc = model.img_encoder
    x = torch.randn(2, 3, 48, 32)
    with torch.inference_mode():
        first = enc(x).tokens
        assert torch.equal(enc(x).tokens, first)
    with torch.no_grad():
        enc.pos_embed.add_(0.5)  # what an optimiser step or load_state_dict does: in place
    with torch.inference_mode():
        moved = enc(x).tokens
    assert not torch.allclose(moved, first)
    fresh = tiny().eval()
    fresh.load_state_dict(model.state_dict())
    with torch.inference_mode():
        assert torch.equal(fresh.img_encoder(x).tokens, moved)
    enc.pos_embed.grad = None
    enc(x).tokens.sum().backward()
    assert enc.pos_embed.grad is not None and enc.pos_embed.grad.abs().sum() > 0


def test_text_pools_at_eot_and_ignores_padding():
    model = tiny().eval()
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[:, :4] = torch.tensor([49406, 320, 736, 49407])
    ids[1, 4:] = 5  # tokens after EOT cannot influence it under the causal mask
    a, b = model.encode_text(ids)
    torch.testing.assert_close(a, b)


def test_hf_config_round_trip():
    cfg = tiny().cfg
    back = from_hf_config(to_hf_config(cfg))
    assert back.vision == VisionConfig(**{**cfg.vision.__dict__, "drop_path_rate": 0.0})
    assert back.text == cfg.text and back.projection_dim == cfg.projection_dim


def test_image_text_contrastive_matches_definition():
    torch.manual_seed(0)
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(math.log(10.0))
    logits = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T * 10.0
    ref = 0.5 * (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4)))
    torch.testing.assert_close(image_text_contrastive(img, txt, scale), ref)
    # the temperature is clamped at 100 as in the official code
    big = image_text_contrastive(img, txt, torch.tensor(10.0))
    torch.testing.assert_close(big, image_text_contrastive(img, txt, torch.tensor(math.log(100.0))))


def test_multi_label_contrastive_matches_brute_force():
    torch.manual_seed(1)
    b, k = 3, 2
    img, prm = torch.randn(b, 8), torch.randn(b, k, 8)
    scale = torch.tensor(math.log(5.0))
    i, t = F.normalize(img, dim=-1), F.normalize(prm, dim=-1).reshape(b * k, 8)
    logits = i @ t.T * 5.0
    loss_i = 0.0
    for r in range(b):  # image r: soft target 1/k on each of its own prompts
        logp = logits[r].log_softmax(dim=0)
        loss_i = loss_i - logp[r * k:(r + 1) * k].mean()
    loss_t = 0.0
    for c in range(b * k):  # prompt c: its own image
        loss_t = loss_t - logits[:, c].log_softmax(dim=0)[c // k]
    ref = 0.5 * (loss_i / b + loss_t / (b * k))
    torch.testing.assert_close(multi_label_contrastive(img, prm, scale), ref)


def test_losses_prefer_matching_pairs():
    torch.manual_seed(2)
    img = torch.randn(6, 16)
    good = image_text_contrastive(img, img + 0.01 * torch.randn(6, 16), torch.tensor(math.log(50.0)))
    bad = image_text_contrastive(img, torch.randn(6, 16), torch.tensor(math.log(50.0)))
    assert good < 0.1 < bad


@pytest.mark.parametrize("bad", [{"num_group_tokens": (8, 4, 2)}, {"num_output_groups": (8,)},
                                 {"image_size": 30}])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        tiny(**bad)


def test_group_noun_loss_rewards_one_group_per_object():
    from clipkit.training.groupvit_losses import group_noun_contrastive

    torch.manual_seed(0)
    t = F.normalize(torch.randn(6, 16), dim=-1)  # six noun embeddings
    ids = torch.tensor([[0, 1, -1], [2, 3, 4], [5, 0, -1]])  # -1: caption padding, ignored
    prompts = torch.stack([t[[0, 1, 0]], t[[2, 3, 4]], t[[5, 0, 5]]])
    specialised = 0.01 * torch.randn(3, 4, 16)
    for b, row in enumerate(ids.tolist()):
        for g, noun in enumerate(n for n in row if n >= 0):
            specialised[b, g] += t[noun]
    collapsed = torch.stack([prompts[b][ids[b] >= 0].mean(0).expand(4, 16) for b in range(3)])
    scale = torch.tensor(math.log(10.0))
    good = group_noun_contrastive(specialised, prompts, ids, scale)
    bad = group_noun_contrastive(collapsed, prompts, ids, scale)
    assert good < 0.5 * bad
    # only padding: no signal, no NaN
    none = group_noun_contrastive(specialised, prompts, torch.full((3, 3), -1), scale)
    assert none.item() == 0.0


def test_set_image_size_resizes_positions_once_as_inference_does():
    """Continuing training at another size (``--init ... --image-size``) keeps the model's function at that size."""
    from clipkit.training.groupvit_phases import set_image_size

    model = tiny().eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        before = model.encode_image(x)
        set_image_size(model, 48)
        after = model.encode_image(x)
    assert model.cfg.vision.image_size == 48 and model.img_encoder.pos_embed.shape[1] == 12 * 12
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError):
        set_image_size(model, 50)


def test_freeze_grouping_keeps_the_assignment_maps_and_trains_the_naming():
    from clipkit.training.groupvit_phases import freeze_grouping, grouping_eval_mode

    model = tiny().train()
    frozen = freeze_grouping(model)
    grouping_eval_mode(model)
    assert "img_encoder.pos_embed" in frozen and "img_encoder.layers.0.group_token" in frozen
    assert not any("assign.v_proj" in n and "layers.1" in n for n in frozen)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = [s.clone() for s in model.img_encoder(x).soft]
        names_before = model.encode_image_groups(x)[1].clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    groups = model.encode_image_groups(x)[1]
    groups.pow(2).sum().backward()
    opt.step()
    with torch.no_grad():
        after = model.img_encoder(x).soft
        names_after = model.encode_image_groups(x)[1]
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(names_before, names_after)


def test_freezing_the_first_stage_lets_the_second_regroup():
    """``--freeze-stages 1``: stage 1's assignment stays, stage 2's moves with training."""
    from clipkit.training.groupvit_phases import freeze_grouping, grouping_eval_mode

    torch.manual_seed(0)
    model = tiny().train()
    frozen = freeze_grouping(model, stages=1)
    grouping_eval_mode(model, stages=1)
    assert "img_encoder.layers.0.group_token" in frozen
    assert not any(n.startswith("img_encoder.layers.1.") for n in frozen)
    assert model.img_encoder.layers[1].training and not model.img_encoder.layers[0].training
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = [s.clone() for s in model.eval().img_encoder(x).soft]
    model.train()
    grouping_eval_mode(model, stages=1)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.encode_image_groups(x)[1].pow(2).sum().backward()
    opt.step()
    with torch.no_grad():
        after = model.eval().img_encoder(x).soft
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])
    with pytest.raises(ValueError):
        freeze_grouping(tiny(), stages=3)


def test_unclaimed_group_flatness_targets_only_unclaimed_groups_of_complete_captions():
    from clipkit.training.groupvit_losses import unclaimed_group_flatness

    torch.manual_seed(0)
    t = F.normalize(torch.randn(6, 16), dim=-1)
    ids = torch.tensor([[0, 1, -1], [2, 3, 4]])
    prompts = torch.stack([t[[0, 1, 0]], t[[2, 3, 4]]])
    groups = torch.zeros(2, 5, 16)
    for b, row in enumerate(ids.tolist()):
        for g, noun in enumerate(n for n in row if n >= 0):
            groups[b, g] = t[noun]
    flat = groups.clone()  # unclaimed groups are zero: equal scores for every noun
    peaked = groups.clone()
    peaked[:, 4] = t[0]  # an unclaimed group that looks like a noun
    peaked[0, 4] = 0.9 * t[1] + 0.1 * t[5]  # (image 0: not t[0] itself, which its group 0 claims)
    scale = torch.tensor(math.log(30.0))
    complete = torch.tensor([True, True])
    low = unclaimed_group_flatness(flat, prompts, ids, complete, scale)
    high = unclaimed_group_flatness(peaked, prompts, ids, complete, scale)
    assert high > low + 0.5
    skipped = unclaimed_group_flatness(peaked, prompts, ids, torch.tensor([False, False]), scale)
    assert skipped.item() == 0.0
