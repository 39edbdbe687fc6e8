"""GroupViT weight files carry the golden numbers: the NVlabs-named golden weights (tests/golden/groupvit_nvlabs.*)
written as an NVlabs ``.pth`` (with or without the ``{"model": …}`` wrapper and DataParallel prefix), then as a
Hugging Face folder (``model.safetensors``, or ``pytorch_model.bin``), load back into a model whose image encoder
still reproduces NVlabs' tokens to 1e-4; the folder detection, file-name dispatch, fp16 saving, the safetensors
``format`` metadata and the missing-weights error behave as documented in clipkit/groupvit/weights.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipkit.groupvit.config import GroupViTConfig
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.weights import (
    is_hf_groupvit_dir,
    load_groupvit,
    load_hf_dir,
    load_nvlabs_pth,
    nvlabs_to_ours,
    save_hf_dir,
)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "groupvit_nvlabs.npz")


@pytest.fixture(scope="module")
def nvlabs_sd(golden):
    """A whole NVlabs-layout state dict: the golden image side plus a seeded text side (NVlabs names)."""
    from safetensors.torch import load_file

    cfg = GroupViTConfig.from_dict(json.loads(str(golden["config"])))
    torch.manual_seed(0)
    text_side = {k: v for k, v in GroupViT(cfg).state_dict().items() if k.startswith("text_")}
    for k, v in list(text_side.items()):
        if k.startswith("text_projector") and k.endswith("weight") and v.ndim == 2:
            text_side[k] = v[..., None]  # NVlabs' 1x1 Conv1d
    return cfg, {**load_file(str(GOLDEN / "groupvit_nvlabs.safetensors")), **text_side}


def _check(model: GroupViT, golden) -> None:
    x = torch.from_numpy(golden["pixels_rect"])
    with torch.no_grad():
        tokens = model.img_encoder(x).tokens
    torch.testing.assert_close(tokens, torch.from_numpy(golden["tokens_rect"]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("wrapped", [True, False])
def test_nvlabs_pth_round_trip(tmp_path, golden, nvlabs_sd, wrapped):
    cfg, sd = nvlabs_sd
    sd = {f"module.{k}": v for k, v in sd.items()} | {"module.img_projector.linear_hidden.1.num_batches_tracked":
                                                        torch.tensor(7)}
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd, "epoch": 3} if wrapped else sd, path)
    _check(load_nvlabs_pth(path, cfg), golden)


def test_nvlabs_pth_that_is_not_a_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a GroupViT checkpoint"):
        load_nvlabs_pth(path)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hf_folder_round_trip(tmp_path, golden, nvlabs_sd, fmt):
    cfg, sd = nvlabs_sd
    model = GroupViT(cfg)
    model.load_state_dict(nvlabs_to_ours(sd), strict=False)
    save_hf_dir(model.eval(), tmp_path)
    assert is_hf_groupvit_dir(tmp_path)
    if fmt == "bin":
        from safetensors.torch import load_file

        torch.save(load_file(str(tmp_path / "model.safetensors")), tmp_path / "pytorch_model.bin")
        (tmp_path / "model.safetensors").unlink()
    (tmp_path / "preprocessor_config.json").unlink()  # optional: defaults then
    back = load_groupvit(tmp_path)
    _check(back, golden)
    assert back.cfg.image_mean == GroupViTConfig().image_mean


def test_fp16_folder_and_metadata(tmp_path, nvlabs_sd):
    from safetensors import safe_open

    cfg, sd = nvlabs_sd
    model = GroupViT(cfg)
    model.load_state_dict(nvlabs_to_ours(sd), strict=False)
    save_hf_dir(model.eval(), tmp_path / "a" / "b", dtype=torch.float16)  # parents created
    with safe_open(str(tmp_path / "a" / "b" / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}  # transformers refuses files without it
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    text = (tmp_path / "a" / "b" / "config.json").read_text()
    assert text.endswith("}\n") and '\n  "' in text  # indented JSON, one trailing newline


def test_folder_detection(tmp_path):
    assert not is_hf_groupvit_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    assert not is_hf_groupvit_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    assert not is_hf_groupvit_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "groupvit"}))
    assert is_hf_groupvit_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        load_hf_dir(tmp_path)


def test_file_dispatch_and_missing_weights(tmp_path, nvlabs_sd):
    cfg, sd = nvlabs_sd
    for suffix in (".pt", ".bin"):
        path = tmp_path / f"x{suffix}"
        torch.save([0], path)
        with pytest.raises(ValueError, match="not a GroupViT checkpoint"):  # routed to the NVlabs loader
            load_groupvit(path)
    with pytest.raises(ValueError, match="expected a Hugging Face GroupViT folder"):
        load_groupvit(tmp_path / "x.onnx")
    partial = {k: v for k, v in sd.items() if not k.startswith("img_encoder.norm.")}
    torch.save({"model": partial}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*missing \['img_encoder\.norm"):
        load_nvlabs_pth(tmp_path / "partial.pth", cfg)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_in_a_folder_bin_is_refused(tmp_path):
    import pickle

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "groupvit"}))
    torch.save({"payload": _Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError):
        load_hf_dir(tmp_path)


def test_checkpoint_without_batchnorm_counters_loads(tmp_path, golden, nvlabs_sd):
    cfg, sd = nvlabs_sd
    torch.save({"model": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}}, tmp_path / "c.pth")
    _check(load_nvlabs_pth(tmp_path / "c.pth", cfg), golden)
