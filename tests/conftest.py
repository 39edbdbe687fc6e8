"""Shared fixtures: an isolated cache, a tiny random open_clip model in hub layout, sample images."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Each test gets its own text-embedding cache and never touches the network."""
    monkeypatch.setenv("CLIPKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CLIPKIT_OFFLINE", "1")
    monkeypatch.delenv("CLIPKIT_DEVICE", raising=False)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (float results of the sketch optimisation depend on the thread count)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init tiny open_clip model (seed 0) saved in open_clip's hub layout."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny-clip")
    config = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def tiny_groupvit(seed: int = 0):
    """A random-init GroupViT (32 px, patch 4, 8 -> 4 groups, width 32), in eval mode."""
    import torch

    from clipkit.groupvit.config import GroupViTConfig, TextConfig, VisionConfig
    from clipkit.groupvit.model import GroupViT

    cfg = GroupViTConfig(
        vision=VisionConfig(image_size=32, patch_size=4, width=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
                            num_group_tokens=(8, 4, 0), num_output_groups=(8, 4), drop_path_rate=0.0),
        text=TextConfig(context_length=16, width=32, layers=1, heads=2), projection_dim=16,
        projection_inner_dim=32)
    torch.manual_seed(seed)
    return GroupViT(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny model loaded through clipkit's registry (on CPU)."""
    os.environ.setdefault("CLIPKIT_OFFLINE", "1")
    from clipkit.registry import load_model

    return load_model(str(tiny_model_dir), device="cpu")


def make_image(path: Path, colour=(200, 30, 30), size=(48, 40), mode="RGB") -> Path:
    """Write a small solid-colour image with a lighter square in it."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:] = colour
    array[size[1] // 4: size[1] // 2, size[0] // 4: size[0] // 2] = 255
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """A folder with three good images (one in a subfolder) and one corrupt file."""
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    make_image(folder / "a.png", (220, 20, 20))
    make_image(folder / "b.jpg", (20, 20, 220))
    make_image(folder / "sub" / "c.png", (20, 200, 20))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return folder


def train_tiny_world_model(command: str, out: Path):
    """``clipkit world <command> OUT`` for two tiny steps without evaluation; returns the registry's load of OUT."""
    from typer.testing import CliRunner

    from clipkit.cli.app import app
    from clipkit.registry import load_model

    result = CliRunner().invoke(app, ["world", command, str(out), "--steps", "2", "--pool-size", "12",
                                      "--batch-size", "6", "--no-eval", "-q"])
    assert result.exit_code == 0, result.output
    return load_model(str(out), device="cpu")
