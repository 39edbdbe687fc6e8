"""Our GroupViT vs the Hugging Face port: same weights must give the same embeddings and assignment maps.

The port is random-init with every parameter perturbed (LayerNorms ≠ (1, 0), biases ≠ 0, BatchNorm statistics
random), so these tests catch a wrong name mapping or q/k/v order in clipkit/groupvit/weights.py as well as wrong
maths in clipkit/groupvit/layers.py and model.py — against the port, not against NVlabs' code (that is
tests/test_golden_groupvit.py).

transformers is a test-only dependency; the library never imports it.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from clipkit.groupvit.config import from_hf_config  # noqa: E402
from clipkit.groupvit.model import GroupViT  # noqa: E402
from clipkit.groupvit.weights import hf_to_ours, ours_to_hf  # noqa: E402


def _hf_model(num_group_tokens=(8, 4, 0), num_output_groups=(8, 4, 4), depths=(2, 1, 1)):
    cfg = transformers.GroupViTConfig(
        text_config={"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": sum(depths),
                       "depths": list(depths), "num_group_tokens": list(num_group_tokens),
                       "num_output_groups": list(num_output_groups), "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 4},
        projection_dim=24,
        projection_intermediate_dim=48,
    )
    torch.manual_seed(0)
    model = transformers.GroupViTModel(cfg)
    # random non-trivial BatchNorm statistics and group tokens (the port initialises them to 0/1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
        for stage in model.vision_model.encoder.stages:
            if stage.group_token is not None:
                stage.group_token.normal_(0, 0.5)
        # then every parameter: LayerNorm weights leave 1 and biases leave 0, so a swapped LayerNorm mapping
        # or a wrong q/k/v bias order changes the outputs (the port initialises them to exactly 1 and 0)
        g = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval(), cfg


def _ours_from(hf_model, hf_cfg) -> GroupViT:
    ours = GroupViT(from_hf_config(hf_cfg.to_dict()))
    missing, unexpected = ours.load_state_dict(hf_to_ours(hf_model.state_dict()), strict=False)
    assert unexpected == []
    assert [k for k in missing if not k.endswith("num_batches_tracked")] == ["multi_label_logit_scale"]
    return ours.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, 32, 32, generator=g)
    ids = torch.zeros(4, 16, dtype=torch.long)
    for i, n in enumerate((3, 7, 10, 14)):  # SOT, random words, EOT, zero padding
        ids[i, 0] = 49406
        ids[i, 1 : n - 1] = torch.randint(1, 49000, (n - 2,), generator=g)
        ids[i, n - 1] = 49407
    return pixels, ids


@torch.no_grad()
def test_embeddings_and_assignments_match_the_port():
    hf, hf_cfg = _hf_model()
    ours = _ours_from(hf, hf_cfg)
    pixels, ids = _inputs()
    ref = hf(input_ids=ids, pixel_values=pixels, output_attentions=True)
    img = torch.nn.functional.normalize(ours.encode_image(pixels), dim=-1)
    txt = torch.nn.functional.normalize(ours.encode_text(ids), dim=-1)
    torch.testing.assert_close(img, ref.image_embeds, atol=1e-4, rtol=0)
    torch.testing.assert_close(txt, ref.text_embeds, atol=1e-4, rtol=0)
    out = ours.img_encoder(pixels)
    hf_maps = ref.vision_model_output.attentions  # per stage, soft assignment [B, groups, tokens]
    assert len(out.soft) == len(hf_maps) == 2
    for mine, theirs in zip(out.soft, hf_maps, strict=True):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)
    # the groups really are used: the stage-1 hard assignment is one-hot over groups per token
    assert torch.all(out.hard[0].sum(dim=1) == 1)
    # segment tokens (projected) match the port's grouped embeddings used for its segmentation logits
    _, groups, _ = ours.encode_image_groups(pixels)
    hf_groups = hf.visual_projection(ref.vision_model_output.last_hidden_state.reshape(-1, 32)).reshape(3, 4, -1)
    torch.testing.assert_close(groups, hf_groups, atol=1e-4, rtol=0)


@torch.no_grad()
def test_state_dict_round_trips_through_the_port_layout():
    hf, hf_cfg = _hf_model()
    ours = _ours_from(hf, hf_cfg)
    back = ours_to_hf(ours.state_dict())
    ref = {k: v for k, v in hf.state_dict().items()
           if k != "text_model.embeddings.position_ids" and not k.endswith("num_batches_tracked")}
    assert set(back) - {k for k in back if k.endswith("num_batches_tracked")} == set(ref)
    for k, v in ref.items():
        assert torch.equal(back[k], v), k


@torch.no_grad()
def test_weights_change_outputs():
    """Guard against a loader that silently keeps random weights: perturb one port weight, the grouping moves."""
    hf, hf_cfg = _hf_model()
    pixels, _ = _inputs()
    a = _ours_from(hf, hf_cfg).img_encoder(pixels).hard[0].argmax(dim=1)
    w = hf.vision_model.encoder.stages[0].downsample.assign.q_proj.weight
    w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(2)))
    b = _ours_from(hf, hf_cfg).img_encoder(pixels).hard[0].argmax(dim=1)
    assert (a != b).float().mean() > 0.3
