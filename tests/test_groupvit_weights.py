"""Weight files: our saved folders are real Hugging Face GroupViT folders; NVlabs .pth checkpoints load safely."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.weights import load_groupvit, load_hf_dir, load_nvlabs_pth, save_hf_dir


def _model() -> GroupViT:
    cfg = GroupViTConfig(
        vision=VisionConfig(image_size=32, patch_size=4, width=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
                            num_group_tokens=(8, 4, 0), num_output_groups=(8, 4), drop_path_rate=0.0),
        text=TextConfig(context_length=16, width=32, layers=1, heads=2),
        projection_dim=16, projection_inner_dim=32, image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))
    torch.manual_seed(0)
    model = GroupViT(cfg)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a dropped buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.zeros(2, 16, dtype=torch.long)
    ids[:, :4] = torch.tensor([49406, 320, 736, 49407])
    ids[1, 2] = 1746
    return torch.randn(2, 3, 32, 32, generator=g), ids


@torch.no_grad()
def test_saved_folder_round_trips_and_keeps_preprocessing(tmp_path):
    model = _model()
    save_hf_dir(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    back = load_hf_dir(tmp_path)
    pixels, ids = _inputs()
    torch.testing.assert_close(back.encode_image(pixels), model.encode_image(pixels))
    torch.testing.assert_close(back.encode_text(ids), model.encode_text(ids))
    assert back.cfg.image_mean == (0.5, 0.5, 0.5) and back.cfg.vision == model.cfg.vision


@torch.no_grad()
def test_saved_folder_opens_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _model()
    save_hf_dir(model, tmp_path)
    hf = transformers.GroupViTModel.from_pretrained(tmp_path).eval()
    pixels, ids = _inputs()
    out = hf(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(out.image_embeds, torch.nn.functional.normalize(model.encode_image(pixels), dim=-1),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(out.text_embeds, torch.nn.functional.normalize(model.encode_text(ids), dim=-1),
                               atol=1e-4, rtol=0)


def _official_state_dict(model: GroupViT) -> dict:
    """Our weights in the NVlabs checkpoint layout: projector Linear -> 1x1 Conv1d, DataParallel prefix."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith(("img_projector", "text_projector")) and k.endswith("weight") and v.ndim == 2:
            v = v[..., None]
        sd[f"module.{k}"] = v.clone()
    return sd


@torch.no_grad()
def test_nvlabs_checkpoint_loads(tmp_path):
    model = _model()
    path = tmp_path / "group_vit.pth"
    torch.save({"model": _official_state_dict(model), "epoch": 30}, path)
    back = load_nvlabs_pth(path, model.cfg)
    pixels, ids = _inputs()
    torch.testing.assert_close(back.encode_image(pixels), model.encode_image(pixels))
    torch.testing.assert_close(back.encode_text(ids), model.encode_text(ids))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_groupvit(path)


def test_wrong_folders_are_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ValueError, match="model_type 'groupvit'"):
        load_groupvit(tmp_path)
    model = _model()
    save_hf_dir(model, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["vision_config"]["hidden_size"] = 48  # weights no longer fit
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((ValueError, RuntimeError)):
        load_groupvit(tmp_path / "m")
