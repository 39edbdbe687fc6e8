"""The model registry: every kind of model spec, caching, safe checkpoints, fast offline failure."""

import json
import time

import open_clip
import pytest
import torch
from conftest import TINY_CFG
from safetensors.torch import load_file

from clipkit import hub, registry
from clipkit.errors import ModelError


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory):
    """The tiny config registered as an open_clip architecture named 'clipkit-tiny-test'."""
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "clipkit-tiny-test.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder / "clipkit-tiny-test.json")
    return "clipkit-tiny-test"


def test_folder_in_hub_layout_loads_frozen_eval_model_once(tiny_model_dir):
    loaded = registry.load_model(str(tiny_model_dir), device="cpu")
    assert loaded.image_size == (32, 32) and loaded.mean == (0.5, 0.5, 0.5)
    assert not loaded.model.training and not any(p.requires_grad for p in loaded.model.parameters())
    assert registry.load_model(str(tiny_model_dir), device="cpu") is loaded
    assert loaded.encode_image(torch.zeros(1, 3, 32, 32)).norm().item() == pytest.approx(1.0, abs=1e-5)


def test_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG}))
    with pytest.raises(ModelError, match=r"needs open_clip_config\.json and open_clip_model\.safetensors"):
        registry.load_model(str(tmp_path))


def test_unknown_model_and_missing_weights_messages():
    with pytest.raises(ModelError, match=r"unknown model .ViT-Q-99.*clipkit models"):
        registry.load_model("ViT-Q-99")
    with pytest.raises(ModelError, match=r"ViT-B-32 needs weights: --pretrained TAG \(.*openai"):
        registry.load_model("ViT-B-32")
    with pytest.raises(ModelError, match="unknown pretrained tag 'nope'"):
        registry.load_model("ViT-B-32", "nope")


def test_architecture_with_safetensors_file(tiny_arch, tiny_model_dir):
    loaded = registry.load_model(tiny_arch, str(tiny_model_dir / "open_clip_model.safetensors"), device="cpu")
    expected = load_file(tiny_model_dir / "open_clip_model.safetensors")["visual.proj"]
    assert torch.equal(loaded.model.visual.proj, expected)


class Marker:
    """An arbitrary object that only unpickles with --trust-checkpoint."""


def test_pickled_objects_need_trust_checkpoint(tiny_arch, tiny_model_dir, tmp_path):
    state = load_file(tiny_model_dir / "open_clip_model.safetensors")
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": state}, plain)
    assert registry.load_model(tiny_arch, str(plain)).model is not None
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": state, "marker": Marker()}, unsafe)
    with pytest.raises(ModelError, match="--trust-checkpoint"):
        registry.load_model(tiny_arch, str(unsafe))
    assert registry.load_model(tiny_arch, str(unsafe), trust_checkpoint=True).model is not None


def test_openai_tags_map_to_quickgelu_and_fail_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(ModelError) as info:
        registry.load_model("ViT-B-32:openai")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "ViT-B-32-quickgelu (openai)" in message and "--pretrained /path/to/weights.safetensors" in message
    assert "\n" not in message


def test_unreachable_hub_fails_within_two_seconds_without_offline_flag(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIPKIT_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1")  # nothing listens there: connection refused
    start = time.perf_counter()
    with pytest.raises(ModelError, match="hub cannot be reached"):
        registry.load_model("hf-hub:someone/some-model")
    assert time.perf_counter() - start < 2.0
    assert not hub.hub_reachable(0.5)


def test_a_bundled_groupvit_is_refused_with_the_command_to_use():
    with pytest.raises(ModelError) as info:
        registry.load_model("shapes-groupvit")
    assert str(info.value) == "shapes-groupvit is a groupvit model, not a CLIP: use it with `clipkit group`"


def test_text_tower_on_the_real_tokens_equals_open_clip(tiny_model):
    """Cutting the padding off a causal text tower gives open_clip's own embeddings (to 1e-5)."""
    import torch

    from clipkit.registry import encode_tokens

    texts = ["a", "a photo of a red circle", "a blue square on green grass"]
    tokens = tiny_model.tokenizer(texts)
    with torch.no_grad():
        full = tiny_model.model.encode_text(tokens)
        trimmed = encode_tokens(tiny_model.model, tokens)
    assert (tokens != 0).sum(1).max() < tokens.shape[1]  # there was padding to cut
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_threads_leave_the_decoding_workers_their_cores(monkeypatch):
    """Beside N decoding workers torch keeps cores − N threads (at least 1) and restores its count after; a
    count the user chose is never changed."""
    import torch

    from clipkit import device

    monkeypatch.setattr(device.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(device, "_USER_THREADS", [])
    monkeypatch.delenv("CLIPKIT_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        with device.threads_beside(1):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 4
        with device.threads_beside(8):
            assert torch.get_num_threads() == 1
        monkeypatch.setattr(device, "_USER_THREADS", [4])
        with device.threads_beside(1):
            assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_transformers_waits_until_a_model_needs_it():
    """A bundled model loads without importing transformers (about 1 s of start-up); a config with a Hugging
    Face text tower gets open_clip's real HFTextEncoder back in the same process."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from clipkit.registry import load_model\n"
            "m = load_model('shapes-clip')\n"
            "print('transformers' in sys.modules)\n"
            "from clipkit.openclip_import import enable_hf_text\n"
            "enable_hf_text()\n"
            "import open_clip, open_clip.hf_model as hf\n"
            "print(hf.transformers is not None, open_clip.model.HFTextEncoder is hf.HFTextEncoder)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_random_weights_are_the_same_in_every_process_and_leave_the_callers_rng_alone(tiny_arch):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, _ = registry._create({"name": tiny_arch, "pretrained": None, "folder": None}, torch.device("cpu"), False)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's stream is untouched
    torch.manual_seed(999)  # another process, another global seed
    second, _ = registry._create({"name": tiny_arch, "pretrained": None, "folder": None}, torch.device("cpu"), False)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
