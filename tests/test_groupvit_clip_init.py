"""Warm start of the tiny GroupViT from a shapes-clip-format open_clip model (clipkit.training.groupvit_clip_init)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from clipkit.cli.app import app
from clipkit.groupvit.config import TextConfig
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.text import tokenize
from clipkit.groupvit.weights import load_groupvit
from clipkit.training.clip import SHAPES_CLIP_CFG, register_model_config, save_hub_folder
from clipkit.training.groupvit import tiny_config
from clipkit.training.groupvit_clip_init import OPENAI_MEAN, init_from_clip, resolve_clip_source, summary
from clipkit.world.model import SHAPES_CLIP_DIR

CAPTIONS = ["a red circle", "a blue star left of a green square", "a photo of a yellow triangle."]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A random open_clip model with the shapes-clip config (every tensor perturbed, so LayerNorm gains and
    biases are not the trivial 1 / 0), saved in float32 in the hub layout."""
    import open_clip

    register_model_config("shapes-clip-test", SHAPES_CLIP_CFG)
    torch.manual_seed(0)
    model = open_clip.create_model("shapes-clip-test")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = save_hub_folder(model, SHAPES_CLIP_CFG, tmp_path_factory.mktemp("oc"), dtype=torch.float32)
    return model.eval(), folder


def _warm(folder: Path, calib: torch.Tensor | None = None) -> tuple[GroupViT, dict]:
    torch.manual_seed(1)
    gv = GroupViT(tiny_config()).eval()
    return gv, init_from_clip(gv, folder, calib)


def test_text_tower_is_copied_exactly(source):
    oc, folder = source
    gv, report = _warm(folder)
    tokens = tokenize(CAPTIONS, 32)
    with torch.no_grad():
        ours = gv.text_encoder(tokens)  # before GroupViT's (random) projection head
        theirs = oc.encode_text(tokens)  # open_clip's feature after its linear text_projection
        short = gv.text_encoder(tokens[:, : int(tokens.argmax(-1).max()) + 1])  # as the trainer cuts them
    torch.testing.assert_close(ours @ oc.text_projection, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short, ours, atol=1e-5, rtol=1e-5)
    assert report["copied"]["text_encoder.transformer.resblocks.1.attn.in_proj_weight"] == (
        "transformer.resblocks.1.attn.in_proj_weight")


def test_patch_conv_and_stage1_blocks_match_open_clip(source):
    # CLS changes the patch outputs (patches attend to it; in GroupViT they attend to group tokens instead), so
    # the blocks are compared on the same controlled token sequence
    oc, folder = source
    gv, _ = _warm(folder)
    x = torch.randn(2, 3, 96, 96)
    h = torch.randn(2, 144, 96)
    with torch.no_grad():
        conv = gv.img_encoder.patch_embed.proj(x)
        torch.testing.assert_close(conv, oc.visual.conv1(x), atol=1e-5, rtol=1e-5)
        ours, theirs = h, h
        for i in range(2):
            ours = gv.img_encoder.layers[0].blocks[i](ours)
            theirs = oc.visual.transformer.resblocks[i](theirs)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(ours, h, atol=1e-2)  # the blocks did something
    g, pos = oc.visual.ln_pre.weight.detach(), oc.visual.positional_embedding.detach()
    expected = g * (pos[1:] - pos[1:].mean(-1, keepdim=True))  # CLS row dropped; a = k = 1 without calibration
    torch.testing.assert_close(gv.img_encoder.pos_embed[0], expected)
    assert torch.equal(gv.img_encoder.patch_embed.proj.bias, torch.zeros(96))
    assert gv.cfg.image_mean == OPENAI_MEAN  # the conv was trained on open_clip's normalisation


def _embed_error(gv: GroupViT, oc: torch.nn.Module, images: torch.Tensor) -> float:
    mean, std = torch.tensor(gv.cfg.image_mean).view(1, 3, 1, 1), torch.tensor(gv.cfg.image_std).view(1, 3, 1, 1)
    x = (images - mean) / std
    with torch.no_grad():
        tokens, grid = gv.img_encoder.patch_embed(x)
        ours = tokens + gv.img_encoder.pos_embed_for(*grid)
        theirs = oc.visual._embeds(x)[:, 1:]  # ln_pre(conv + pos), patch tokens
    return float(F.mse_loss(ours, theirs))


def test_calibrated_embedding_is_closer_on_held_out_images(source):
    oc, folder = source
    torch.manual_seed(2)
    blocks = lambda n: F.interpolate(torch.rand(n, 3, 6, 6), size=96, mode="nearest")  # noqa: E731 flat patches
    calib, held_out = blocks(32), blocks(16)
    plain, _ = _warm(folder)
    fitted, report = _warm(folder, calib)
    assert report["embedding"]["calib_images"] == 32 and report["embedding"]["k"] != 1.0
    assert _embed_error(fitted, oc, held_out) < _embed_error(plain, oc, held_out)


def test_report_lists_what_stayed_at_init(source):
    _, folder = source
    _, report = _warm(folder)
    left = set(report["left_at_init"])
    assert {"img_projector", "text_projector", "logit_scale", "multi_label_logit_scale", "img_encoder.norm",
            "img_encoder.layers.1", "img_encoder.layers.0.group_token", "img_encoder.layers.0.downsample"} <= left
    assert not any(k.startswith(("img_projector", "text_projector", "img_encoder.layers.1")) for k in report["copied"])
    # 2 conv + 3 embedding + 2 x 12 vision block + 2 text embeddings + 2 x 12 text block + 2 ln_final tensors
    assert len(report["copied"]) == 2 + 3 + 24 + 2 + 24 + 2 and not report["skipped"]
    assert "copied 57 tensors" in summary(report)


def test_mismatched_text_tower_keeps_only_the_embeddings(source):
    _, folder = source
    cfg = tiny_config()
    cfg.text = TextConfig(context_length=32, width=64, layers=2, heads=2)  # the shipped model's: QuickGELU, MLP 256
    gv = GroupViT(cfg)
    report = init_from_clip(gv, folder)
    assert "text_encoder.transformer" in report["skipped"]
    assert "text_encoder.token_embedding.weight" in report["copied"]
    assert not any(k.startswith("text_encoder.transformer") for k in report["copied"])


def _scenes(n: int, seed: int) -> torch.Tensor:
    import numpy as np

    from clipkit.world import SceneConfig, generate

    images = np.stack([np.asarray(s.image) for s in generate(n, seed=seed, config=SceneConfig(size=(96, 96)))])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def test_bundled_shapes_clip_maps_fully():
    from clipkit.world.model import load_shapes_clip

    assert resolve_clip_source("shapes-clip") == SHAPES_CLIP_DIR
    oc = load_shapes_clip()[0]
    plain = GroupViT(tiny_config())
    init_from_clip(plain, "shapes-clip")
    fitted = GroupViT(tiny_config())
    report = init_from_clip(fitted, "shapes-clip", _scenes(16, seed=1))
    assert len(report["copied"]) == 57 and not report["skipped"]
    held_out = _scenes(8, seed=0)
    assert _embed_error(fitted, oc, held_out) < 0.5 * _embed_error(plain, oc, held_out)
    with pytest.raises(FileNotFoundError):
        resolve_clip_source(SHAPES_CLIP_DIR.parent / "no-such-model")


def test_cli_trains_from_a_warm_start(source, tmp_path):
    _, folder = source
    out = tmp_path / "gv"
    runner = CliRunner()
    args = ["world", "train-groupvit", str(out), "--init-clip", str(folder), "--steps", "2", "--scenes", "16",
            "--batch-size", "4", "--threads", "1", "--no-eval", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    model = load_groupvit(out)
    meta = json.loads((out / "clipkit.json").read_text())
    assert meta["training"]["init_clip"] == str(folder) and meta["training"]["steps_done"] == 2
    assert len(meta["warm_start"]["copied"]) == 57 and meta["warm_start"]["embedding"]["calib_images"] == 16
    assert tuple(model.cfg.image_mean) == pytest.approx(OPENAI_MEAN)
    assert model.cfg.text.hidden_act == "gelu" and model.cfg.text.mlp_ratio == 2.0
    from safetensors.torch import load_file

    src = load_file(str(folder / "open_clip_model.safetensors"))
    unused = 20000  # a token id the world never uses: no gradient, so still the source's row
    torch.testing.assert_close(model.text_encoder.token_embedding.weight[unused], src["token_embedding.weight"][unused])
    assert runner.invoke(app, [*args[:3], "--init", str(out), *args[3:]]).exit_code != 0


def test_new_text_tower_still_opens_in_transformers(source, tmp_path):
    """tiny_config's text tower (GELU, MLP 2x) is saved as the port's hidden_act / intermediate_size."""
    transformers = pytest.importorskip("transformers")
    from clipkit.groupvit.weights import save_hf_dir

    _, folder = source
    gv, _ = _warm(folder)
    save_hf_dir(gv, tmp_path / "hf")
    hf = transformers.GroupViTModel.from_pretrained(str(tmp_path / "hf")).eval()
    tokens = tokenize(CAPTIONS, 32)
    with torch.no_grad():
        ours = F.normalize(gv.encode_text(tokens), dim=-1)
        theirs = hf(input_ids=tokens, pixel_values=torch.zeros(1, 3, 96, 96)).text_embeds  # normalised
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert load_groupvit(tmp_path / "hf").cfg.text == gv.cfg.text
