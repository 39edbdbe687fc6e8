"""Dense CLIP, structural checks: ``plain`` reproduces open_clip's stock forward (to 1e-5); each other variant
depends on exactly the last-block parameters its official form uses (which of q/k/v, whether the residual and FFN
are kept), NACLIP's prior is a CLS-sparing Gaussian, and the sliding/shifted-grid plumbing reassembles images.

These tests do not prove the variants' numbers equal the official code's — a wrong combination of the right
parameters (e.g. q·kᵀ for k·kᵀ) passes here; tests/test_golden_dense.py compares against the official outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipkit import dense
from clipkit.errors import UsageError

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 8, "head_width": 16,
                   "pool_type": "avg"},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    """A random-init tiny open_clip ViT (avg pooling, 8x8 patch grid), seed 0, eval mode."""
    import open_clip

    path = tmp_path_factory.mktemp("cfg") / "clipkit-test-dense.json"
    path.write_text(json.dumps(TINY))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model = open_clip.create_model("clipkit-test-dense").eval()
    # random init leaves ln/bias at defaults; perturb so the variants' differences are visible
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _pixels(b=2, h=64, w=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, h, w, generator=g)


def test_plain_reproduces_stock_forward(clip_model):
    x = _pixels()
    visual = clip_model.visual
    visual.output_tokens = True
    try:
        with torch.no_grad():
            pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    with torch.no_grad():
        raw = dense.patch_embeddings(clip_model, x, "plain", normalize=False)
    assert raw.shape == (2, 8, 8, 32)
    # open_clip returns ln_post'ed tokens before the projection
    torch.testing.assert_close(raw.reshape(2, 64, 32), tokens @ visual.proj, rtol=1e-5, atol=1e-5)
    # avg pooling: the stock image embedding is the mean of the projected patch tokens
    torch.testing.assert_close(raw.mean(dim=(1, 2)), pooled, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(raw.mean(dim=(1, 2)), clip_model.encode_image(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", dense.VARIANTS)
def test_variants_any_size_normalised(clip_model, variant):
    with torch.no_grad():
        emb = dense.patch_embeddings(clip_model, _pixels(1, 48, 80), variant)
    assert emb.shape == (1, 6, 10, 32) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1, 6, 10))


def test_variants_differ_from_plain(clip_model):
    x = _pixels(1)
    with torch.no_grad():
        out = {v: dense.patch_embeddings(clip_model, x, v) for v in dense.VARIANTS}
    for v in dense.VARIANTS[:-1]:
        assert (out[v] - out["plain"]).abs().max() > 1e-3, v


def _perturbed(clip_model, attr_path, fn):
    """Embeddings of every variant before and after perturbing one last-block parameter in place."""
    x = _pixels(1)
    blk = clip_model.visual.transformer.resblocks[-1]
    obj = blk
    *parents, leaf = attr_path.split(".")
    for p in parents:
        obj = getattr(obj, p)
    param = getattr(obj, leaf)
    saved = param.detach().clone()
    with torch.no_grad():
        before = {v: dense.patch_embeddings(clip_model, x, v) for v in dense.VARIANTS}
        fn(param)
        after = {v: dense.patch_embeddings(clip_model, x, v) for v in dense.VARIANTS}
        param.copy_(saved)
    return {v: float((before[v] - after[v]).abs().max()) for v in dense.VARIANTS}


def test_ffn_dropped_exactly_where_the_official_code_drops_it(clip_model):
    change = _perturbed(clip_model, "mlp.c_proj.weight", lambda p: p.mul_(5.0).add_(0.5))
    assert change["naclip"] < 1e-6 and change["clearclip"] < 1e-6  # residual + FFN dropped
    for v in ("sclip", "maskclip", "plain"):
        assert change[v] > 1e-3, v  # residual + FFN kept


def test_maskclip_uses_the_value_path_only(clip_model):
    width = clip_model.visual.transformer.width

    def scramble_qk(p):  # in_proj rows [0, 2*width) produce q and k
        p[: 2 * width].mul_(-3.0).add_(0.1)

    change = _perturbed(clip_model, "attn.in_proj_weight", scramble_qk)
    assert change["maskclip"] < 1e-6
    for v in ("naclip", "clearclip", "sclip", "plain"):
        assert change[v] > 1e-4, v


def test_clearclip_ignores_keys_naclip_ignores_queries(clip_model):
    width = clip_model.visual.transformer.width
    change_k = _perturbed(clip_model, "attn.in_proj_weight", lambda p: p[width : 2 * width].mul_(-2.0))
    change_q = _perturbed(clip_model, "attn.in_proj_weight", lambda p: p[:width].mul_(-2.0))
    assert change_k["clearclip"] < 1e-6 and change_k["naclip"] > 1e-4
    assert change_q["naclip"] < 1e-6 and change_q["clearclip"] > 1e-4 and change_q["sclip"] > 1e-4


def test_naclip_prior_is_gaussian_and_spares_cls():
    prior = dense._naclip_prior((4, 5), 5.0, "cpu", torch.float32)
    assert prior.shape == (21, 21)
    assert torch.all(prior[0] == 0) and torch.all(prior[:, 0] == 0)
    assert torch.allclose(torch.diagonal(prior)[1:], torch.ones(20))
    # patches (0,0) and (0,3): distance 3 -> exp(-9/50)
    assert prior[1, 4].item() == pytest.approx(np.exp(-9 / 50), rel=1e-6)


def test_positional_embedding_native_is_identity_other_sizes_interpolated(clip_model):
    visual = clip_model.visual
    assert dense._positional_embedding(visual, (8, 8)) is visual.positional_embedding
    with torch.no_grad():
        pos = dense._positional_embedding(visual, (16, 16))
    assert pos.shape == (1 + 256, 64)
    torch.testing.assert_close(pos[0], visual.positional_embedding[0])
    # bicubic upsampling of a smooth field keeps it close to the nearest native value
    grid = visual.positional_embedding[1:].reshape(8, 8, 64)
    up = pos[1:].reshape(16, 16, 64)
    assert (up[::2, ::2] - grid).abs().mean() < (grid - grid.mean((0, 1))).abs().mean()


def test_sliding_window_reassembles_the_image():
    pixels = torch.arange(1 * 3 * 50 * 77, dtype=torch.float32).reshape(1, 3, 50, 77)
    calls = []

    def identity(crops):
        calls.append(crops.shape)
        return crops[:, :2]

    out = dense.sliding_logits(pixels, identity, window=(32, 32), stride=(16, 16), patch=(8, 8))
    assert out.shape == (2, 50, 77)
    torch.testing.assert_close(out, pixels[0, :2])
    n_windows = sum(s[0] for s in calls)
    assert n_windows == 3 * 4  # rows 0,16,18 ; cols 0,16,32,45


def test_sliding_window_pads_crops_to_the_patch_grid():
    pixels = torch.randn(1, 3, 30, 30)
    seen = []

    def fn(crops):
        seen.append(tuple(crops.shape[-2:]))
        return crops[:, :1]

    out = dense.sliding_logits(pixels, fn, window=(64, 64), stride=(32, 32), patch=(8, 8))
    assert seen == [(32, 32)]
    torch.testing.assert_close(out, pixels[0, :1])


def test_dense_logits_single_window_equals_scaled_cosine(clip_model):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    text = F.normalize(torch.randn(3, 32), dim=-1)
    logits = dense.dense_logits(clip_model, img, text, variant="naclip", scale=10.0)
    assert logits.shape == (3, 64, 64)
    px = dense.image_tensor(clip_model, img)
    with torch.no_grad():
        emb = dense.patch_embeddings(clip_model, px, "naclip")
    cos = torch.einsum("bhwd,nd->bnhw", emb, text)
    ref = F.interpolate(cos, size=(64, 64), mode="bilinear", align_corners=False)[0] * 10.0
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


def test_dense_logits_original_size_and_default_scale(clip_model):
    img = Image.new("RGB", (150, 97), (200, 30, 30))
    text = torch.randn(2, 32)
    logits = dense.dense_logits(clip_model, img, text, variant="clearclip", stride=20)
    assert logits.shape == (2, 97, 150)
    assert logits.abs().max() <= 50.0 + 1e-4  # |cos| <= 1 times ClearCLIP's official scale 50


def test_unknown_variant_is_a_usage_error(clip_model):
    with pytest.raises(UsageError, match="unknown dense variant 'foo'"):
        dense.patch_embeddings(clip_model, _pixels(1), "foo")
    with pytest.raises(UsageError, match="multiples of the patch size"):
        dense.patch_embeddings(clip_model, _pixels(1, 60, 64), "plain")


def _patch_means(pixels: torch.Tensor) -> torch.Tensor:
    """A stand-in tower: each 8x8 patch's mean of channel 0, as ``[n, h, w, 1]`` tokens."""
    return F.avg_pool2d(pixels[:, :1], 8).permute(0, 2, 3, 1)


def test_shifted_grid_localises_an_edge_to_the_finer_cell():
    """A vertical step at x = 12 (inside patch 1): one pass sees 0, 0.5, 1, 1 per 8 px; two shifted passes per
    axis give 4 px cells 0, 0, .25, .75, 1, ... — each cell the mean of the two patches that cover it."""
    pixels = torch.zeros(1, 3, 32, 32)
    pixels[..., 12:] = 1.0
    coarse = dense.shifted_grid(pixels, _patch_means, patch=(8, 8), shifts=1)
    fine = dense.shifted_grid(pixels, _patch_means, patch=(8, 8), shifts=2)
    assert coarse.shape == (1, 4, 4, 1) and fine.shape == (1, 8, 8, 1)
    torch.testing.assert_close(coarse[0, 2, :, 0], torch.tensor([0.0, 0.5, 1.0, 1.0]))
    # rows from 1 on (row 0 of the shifted pass is half padding, which enters at the top)
    expected = torch.tensor([0.0, 0.0, 0.25, 0.75, 1.0, 1.0, 1.0, 1.0])
    for row in range(1, 8):
        torch.testing.assert_close(fine[0, row, :, 0], expected)


def test_patch_embeddings_shifts_give_a_finer_normalised_grid(clip_model):
    px = _pixels(2)
    with torch.no_grad():
        one = dense.patch_embeddings(clip_model, px, "naclip")
        same = dense.patch_embeddings(clip_model, px, "naclip", shifts=1)
        two = dense.patch_embeddings(clip_model, px, "naclip", shifts=2)
        four = dense.patch_embeddings(clip_model, px, "naclip", shifts=4)
    torch.testing.assert_close(same, one)
    assert two.shape == (2, 16, 16, 32) and four.shape == (2, 32, 32, 32)
    torch.testing.assert_close(two.norm(dim=-1), torch.ones(2, 16, 16))
    with pytest.raises(UsageError, match="shifts"):
        dense.patch_embeddings(clip_model, px, "plain", shifts=3)
