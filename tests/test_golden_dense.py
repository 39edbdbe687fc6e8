"""Golden references: clipkit's dense variants reproduce the official NACLIP, SCLIP, ClearCLIP and MaskCLIP code.

The fixtures (tests/golden/dense_*; provenance in tests/golden/SOURCES.md) hold a tiny open_clip ViT with every
parameter perturbed (LayerNorm weights ≠ 1, all biases ≠ 0), two input batches (a 6×6 native grid and a 4×7
non-square grid) and the raw projected patch tokens each official implementation computed on them
(bench/golden/make_golden.py). clipkit must match them to 1e-4, per image of the batch, for the un-normalised
tokens — so a wrong matrix, a missing prior, a kept/dropped residual or FFN, a transposed grid or a mixed-up
batch all fail here. Not covered: the positional-embedding resize itself (both sides receive the same exact-size
bicubic resize; the repos' ``scale_factor`` variant is clipkit's documented deviation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipkit import dense

GOLDEN = Path(__file__).parent / "golden"
OFFICIAL = ("naclip", "sclip", "clearclip", "maskclip")


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "dense_variants.npz")


@pytest.fixture(scope="module")
def visual(golden):
    """The fixture's tiny open_clip VisionTransformer, built from its recorded config and saved weights."""
    from open_clip.transformer import QuickGELU, VisionTransformer
    from safetensors.torch import load_file

    cfg = json.loads(str(golden["config"]))
    assert cfg["act"] == "quick_gelu"
    model = VisionTransformer(
        image_size=cfg["image_size"], patch_size=cfg["patch_size"], width=cfg["width"], layers=cfg["layers"],
        heads=cfg["heads"], mlp_ratio=cfg["mlp_ratio"], output_dim=cfg["output_dim"], act_layer=QuickGELU,
    )
    model.load_state_dict(load_file(str(GOLDEN / "dense_vit.safetensors")), strict=True)
    return model.eval()


def test_fixture_weights_are_perturbed_everywhere(visual):
    """Guards the fixture itself: no LayerNorm is the identity and no bias is zero, or a swapped LayerNorm or a
    dropped bias could go unnoticed."""
    for name, p in visual.named_parameters():
        if name.endswith("bias"):
            assert p.abs().min() > 0, name
        if (".ln_" in name or name.startswith("ln_")) and name.endswith("weight"):
            assert (p - 1).abs().max() > 0.05, name


@pytest.mark.parametrize("shape", ["square", "rect"])
@pytest.mark.parametrize("variant", OFFICIAL)
def test_variant_matches_official_code(golden, visual, variant, shape):
    x = torch.from_numpy(golden[f"pixels_{shape}"])
    ref = torch.from_numpy(golden[f"{variant}_{shape}"])
    with torch.no_grad():
        ours = dense.patch_embeddings(visual, x, variant, normalize=False)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4)
    # the variants' references differ from each other far beyond the tolerance, so matching one proves the form
    others = [v for v in OFFICIAL if v != variant]
    assert min(float((torch.from_numpy(golden[f"{o}_{shape}"]) - ref).abs().max()) for o in others) > 0.1


@pytest.mark.parametrize("variant", OFFICIAL)
def test_normalised_output_is_the_unit_official_token(golden, visual, variant):
    x = torch.from_numpy(golden["pixels_rect"])
    ref = torch.nn.functional.normalize(torch.from_numpy(golden[f"{variant}_rect"]), dim=-1)
    with torch.no_grad():
        ours = dense.patch_embeddings(visual, x, variant)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
