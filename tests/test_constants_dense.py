"""Dense-CLIP constants and model plumbing pinned by behaviour, on the golden tiny ViT (tests/golden/dense_*):
each variant's official softmax scale as ``dense_logits`` applies it (NACLIP 40, SCLIP 40, ClearCLIP 50, MaskCLIP
100, ``plain`` the model's own ``exp(logit_scale)``), a ``LoadedModel``-style wrapper (``.model``, ``.precision``,
``.image_size``, ``.logit_scale``) giving the same embeddings as the bare tower — and different ones under bf16
autocast — and the NACLIP prior in the caller's dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipkit import dense

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def visual():
    from open_clip.transformer import QuickGELU, VisionTransformer
    from safetensors.torch import load_file

    cfg = json.loads(str(np.load(GOLDEN / "dense_variants.npz")["config"]))
    model = VisionTransformer(
        image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=cfg["width"], layers=cfg["layers"],
        heads=cfg["heads"], mlp_ratio=cfg["mlp_ratio"], output_dim=cfg["output_dim"], act_layer=QuickGELU,
    )
    model.load_state_dict(load_file(str(GOLDEN / "dense_vit.safetensors")))
    return model.eval()


def _image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8))


@pytest.mark.parametrize(("variant", "scale"), [("naclip", 40.0), ("sclip", 40.0), ("clearclip", 50.0),
                                                ("maskclip", 100.0)])
def test_default_logit_scale_of_each_variant(visual, variant, scale):
    text = F.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    default = dense.dense_logits(visual, _image(), text, variant=variant)
    unit = dense.dense_logits(visual, _image(), text, variant=variant, scale=1.0)
    torch.testing.assert_close(default, scale * unit, rtol=1e-5, atol=1e-5)
    assert dense.logit_scale_for(SimpleNamespace(logit_scale=7.0), variant) == scale


def test_plain_uses_the_model_scale():
    clip = SimpleNamespace(logit_scale=torch.nn.Parameter(torch.tensor(2.0)))
    assert dense.logit_scale_for(clip, "plain") == pytest.approx(float(np.exp(2.0)))
    assert dense.logit_scale_for(SimpleNamespace(logit_scale=33.0), "plain") == 33.0  # LoadedModel's float
    wrapped = SimpleNamespace(model=clip)  # a wrapper without its own float: the inner module's parameter
    assert dense.logit_scale_for(wrapped, "plain") == pytest.approx(float(np.exp(2.0)))


def test_loaded_model_wrapper(visual):
    """What ``registry.LoadedModel`` exposes: ``.model`` (here the tower itself), ``.precision``, ``.device``,
    ``.image_size``. fp32 reproduces the bare tower; bf16 autocast changes the numbers (so it is applied)."""
    x = torch.from_numpy(np.load(GOLDEN / "dense_variants.npz")["pixels_rect"])
    with torch.no_grad():
        bare = dense.patch_embeddings(visual, x, "naclip")
    for precision, close in (("fp32", True), ("bf16", False)):
        wrapped = SimpleNamespace(model=visual, precision=precision, device=torch.device("cpu"),
                                  image_size=(16, 28))
        with torch.no_grad():
            out = dense.patch_embeddings(wrapped, x, "naclip")
        assert out.dtype == torch.float32
        diff = float((out - bare).abs().max())
        assert (diff < 1e-6) if close else (1e-4 < diff < 0.2), (precision, diff)
        assert dense.model_window(wrapped) == (16, 28)
        assert dense.patch_grid(wrapped) == (4, 4)
    assert dense.model_window(SimpleNamespace(image_size=20)) == (20, 20)
    assert dense.model_window(visual) == (24, 24)


def test_patch_grid_of_a_rectangular_patch():
    from open_clip.transformer import VisionTransformer

    vit = VisionTransformer(image_size=(16, 24), patch_size=(4, 6), width=8, layers=1, heads=1, mlp_ratio=1.0,
                            output_dim=4)
    assert dense.patch_grid(vit) == (4, 6)


def test_naclip_prior_follows_the_requested_dtype():
    prior = dense._naclip_prior((3, 4), 5.0, "cpu", torch.float64)
    assert prior.dtype == torch.float64 and prior.shape == (13, 13)


# ------------------------------------------------------------------ plumbing around the maths, hand-computed
def test_positional_embedding_cache_is_per_grid(visual):
    """Each grid size gets its own resize (bicubic, exact size): a cached grid must not answer for another."""
    def expected(grid):
        pos = visual.positional_embedding.detach()
        patch = pos[1:].reshape(1, 6, 6, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])

    for grid in [(7, 7), (4, 7), (7, 4), (4, 7), (6, 6)]:
        with torch.no_grad():
            got = dense._positional_embedding(visual, grid)
        torch.testing.assert_close(got, expected(grid), rtol=0, atol=1e-6)


def test_positional_embedding_of_a_rectangular_native_grid():
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=(8, 12), patch_size=4, width=8, layers=1, heads=1, mlp_ratio=1.0,
                            output_dim=4)
    pos = vit.positional_embedding.detach()
    patch = pos[1:].reshape(1, 2, 3, -1).permute(0, 3, 1, 2)
    ref = F.interpolate(patch, size=(4, 5), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(20, -1)
    with torch.no_grad():
        got = dense._positional_embedding(vit, (4, 5))
    torch.testing.assert_close(got[1:], ref, rtol=0, atol=1e-6)


def test_visual_tokens_returns_the_requested_intermediates(visual):
    x = torch.from_numpy(np.load(GOLDEN / "dense_variants.npz")["pixels_square"])
    with torch.no_grad():
        last_in, inter, grid = dense.visual_tokens(visual, x, indices=[0])
        t, _ = dense._embed(visual, x)
        block0 = visual.transformer.resblocks[0](t)
    assert grid == (6, 6) and len(inter) == 1
    torch.testing.assert_close(inter[0], block0)
    torch.testing.assert_close(last_in, block0)  # 2 blocks: the last block's input is block 0's output
    assert dense.visual_tokens(visual, x)[1] == []


def test_project_without_a_projection_returns_ln_post(visual):
    x = torch.randn(1, 3, 32)
    proj = visual.proj
    try:
        visual.proj = None
        with torch.no_grad():
            torch.testing.assert_close(dense._project(visual, x), visual.ln_post(x))
    finally:
        visual.proj = proj


def test_shift_and_size_checks_look_at_each_axis():
    from open_clip.transformer import VisionTransformer

    from clipkit.errors import UsageError

    vit = VisionTransformer(image_size=(16, 24), patch_size=(4, 6), width=8, layers=1, heads=1, mlp_ratio=1.0,
                            output_dim=4).eval()
    with pytest.raises(UsageError):
        dense.check_shifts(vit, 3)  # divides 6 but not 4
    with pytest.raises(UsageError):
        dense.check_shifts(vit, 0)
    dense.check_shifts(vit, 2)
    with pytest.raises(UsageError):
        dense.patch_embeddings(vit, torch.zeros(1, 3, 24, 28))  # 24 fits both sides, 28 is not a multiple of 6


@pytest.mark.parametrize("normalize", [True, False])
def test_shifted_passes_keep_the_variant_and_normalisation(visual, normalize):
    from clipkit.sliding import shifted_grid

    x = torch.from_numpy(np.load(GOLDEN / "dense_variants.npz")["pixels_square"])
    with torch.no_grad():
        got = dense.patch_embeddings(visual, x, "sclip", normalize=normalize, shifts=2)
        ref = shifted_grid(x, lambda px: dense.patch_embeddings(visual, px, "sclip", normalize=normalize),
                           patch=(4, 4), shifts=2)
    ref = F.normalize(ref, dim=-1) if normalize else ref
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert (got.norm(dim=-1) - 1).abs().max() < 1e-5 if normalize else (got.norm(dim=-1) - 1).abs().max() > 0.1


def test_image_tensor_by_hand(visual):
    """No crop; bicubic resize of the short side when asked; /255 then the model's mean/std (OpenAI's when the
    model has none); on the model's device."""
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (10, 15, 3), dtype=np.uint8))
    openai_mean, openai_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    def by_hand(im, mean, std):
        arr = torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)
        return ((arr - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1))[None]

    torch.testing.assert_close(dense.image_tensor(visual, img), by_hand(img, openai_mean, openai_std))
    resized = img.resize((24, 16), Image.BICUBIC)
    torch.testing.assert_close(dense.image_tensor(visual, img, short_side=16), by_hand(resized, openai_mean,
                                                                                        openai_std))
    torch.testing.assert_close(dense.image_tensor(visual, img, short_side=10), by_hand(img, openai_mean,
                                                                                        openai_std))
    wrapped = SimpleNamespace(mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), device=torch.device("cpu"), model=visual)
    torch.testing.assert_close(dense.image_tensor(wrapped, img.convert("L")),
                               by_hand(img.convert("L").convert("RGB"), wrapped.mean, wrapped.std))
    assert dense.image_tensor(visual, Image.new("RGB", (1, 40)), short_side=2).shape == (1, 3, 80, 2)


def test_dense_logits_by_hand(visual):
    """Default stride half the window, short side the window's, text re-normalised, the variant's embeddings,
    then a bilinear (align_corners=False) resize to the image size."""
    from clipkit.sliding import sliding_logits

    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 255, (30, 45, 3), dtype=np.uint8))  # short side 30 -> 24
    text = 3.0 * F.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(3)), dim=-1)
    got = dense.dense_logits(visual, img, text, variant="sclip", scale=2.0)
    px = dense.image_tensor(visual, img, short_side=24)
    assert px.shape[-2:] == (24, 36)
    with torch.no_grad():
        cos = sliding_logits(px, lambda c: torch.einsum("bhwd,nd->bnhw", dense.patch_embeddings(visual, c, "sclip"),
                                                        F.normalize(text, dim=-1)),
                             window=(24, 24), stride=(12, 12), patch=(4, 4))
    ref = 2.0 * F.interpolate(cos[None], size=(30, 45), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    with pytest.raises(Exception, match="stride"):
        dense.dense_logits(visual, img, text, stride=0)
    one = dense.dense_logits(visual, img, text, variant="sclip", scale=2.0, stride=1)
    assert one.shape == got.shape


def test_default_variant_and_background_cut():
    """``plain`` for average-pooled towers (bare model or wrapper), NACLIP otherwise; the cosine cut: the
    request, else the model's calibrated one for that variant, ``None`` for -1 or when there is none."""
    avg = SimpleNamespace(visual=SimpleNamespace(pool_type="avg"))
    tok = SimpleNamespace(visual=SimpleNamespace(pool_type="tok"))
    assert dense.default_variant(avg) == "plain" and dense.default_variant(SimpleNamespace(model=avg)) == "plain"
    assert dense.default_variant(tok) == "naclip" and dense.default_variant(object()) == "naclip"
    meta = SimpleNamespace(meta={"segment_min_cosine": {"plain": 0.25}})
    assert dense.min_cosine_for(meta, "plain") == 0.25
    assert dense.min_cosine_for(meta, "naclip") is None
    assert dense.min_cosine_for(meta, "plain", 0.1) == 0.1 and dense.min_cosine_for(meta, "plain", -1) is None
    assert dense.min_cosine_for(SimpleNamespace(meta=None), "plain") is None
    assert dense.min_cosine_for(object(), "plain", 0) == 0.0


def test_image_tensor_keeps_at_least_one_pixel_per_side(visual):
    assert dense.image_tensor(visual, Image.new("RGB", (3, 40)), short_side=1).shape == (1, 3, 13, 1)
    assert dense.image_tensor(visual, Image.new("RGB", (40, 3)), short_side=1).shape == (1, 3, 1, 13)


def test_dense_logits_non_square_window_portrait_image_plain_scale_and_shifts(visual):
    """A wrapper with a 24×28 input: default stride (12, 14) over a portrait image (so both strides matter),
    ``plain`` at the wrapper's own scale, and ``shifts`` reaching the dense pass."""
    from clipkit.sliding import sliding_logits

    wrapped = SimpleNamespace(model=visual, image_size=(24, 28), logit_scale=3.0, device=torch.device("cpu"))
    rng = np.random.default_rng(4)
    img = Image.fromarray(rng.integers(0, 255, (50, 30, 3), dtype=np.uint8))  # portrait: short side 30 -> 24
    text = F.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(5)), dim=-1)
    px = dense.image_tensor(wrapped, img, short_side=24)
    assert px.shape[-2:] == (40, 24)
    for variant, shifts, scale in (("plain", 1, 3.0), ("naclip", 2, 40.0)):
        got = dense.dense_logits(wrapped, img, text, variant=variant, shifts=shifts)
        with torch.no_grad():
            cos = sliding_logits(
                px, lambda c, v=variant, s=shifts: torch.einsum(
                    "bhwd,nd->bnhw", dense.patch_embeddings(wrapped, c, v, shifts=s), text),
                window=(24, 28), stride=(12, 14), patch=(4, 4))
        ref = scale * F.interpolate(cos[None], size=(50, 30), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)
