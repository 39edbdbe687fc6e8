"""Usage checks that need no torch: model specs, devices, precisions and template specs.

The CLI runs them before importing torch or loading a model, so a typo costs a fraction of a second, not the
10 s of a model load. They only reject what is certainly wrong; the registry and device manager still check
everything when they load (for instance whether a pretrained tag exists).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from clipkit.errors import UsageError

ASSETS = Path(__file__).parent / "assets"
PRECISIONS = ("fp32", "fp16", "bf16")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def bundled_names() -> list[str]:
    """Names of the bundled models (folders under ``clipkit/assets``)."""
    return sorted(p.name for p in ASSETS.iterdir() if p.is_dir()) if ASSETS.is_dir() else []


def open_clip_architectures() -> set[str]:
    """open_clip's architecture names, read from its config folder without importing it (or torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        return set()
    folder = Path(spec.origin).parent / "model_configs"
    return {p.stem for p in folder.glob("*.json")}


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~")) or text.endswith(_WEIGHT_SUFFIXES)


def check_model(model: str | None, pretrained: str | None = None) -> None:
    """Reject model specs that cannot load: a missing folder/file, an unknown architecture."""
    if pretrained is not None and _looks_like_path(pretrained) and not Path(pretrained).expanduser().exists():
        raise UsageError(f"--pretrained {pretrained}: no such file")
    if model is None or model in bundled_names() or model.startswith(("hf-hub:", "local-dir:")):
        return
    if Path(model).expanduser().exists():
        return
    if _looks_like_path(model):
        raise UsageError(f"--model {model}: no such folder or file")
    arch = model.partition(":")[0] if pretrained is None else model
    known = open_clip_architectures()
    if known and arch.replace("/", "-") not in known:
        names = ", ".join([*bundled_names(), "ViT-B-32", "ViT-B-16", "RN50", "…"])
        raise UsageError(f"unknown model {model!r}: try one of {names} (`clipkit models` lists all)")


def _has_cuda() -> bool:
    return any(Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg"))


def check_device(device: str | None, precision: str | None = None) -> None:
    """Reject unknown devices, a GPU that is not there, unknown precisions, fp16 on the CPU."""
    name = device or os.environ.get("CLIPKIT_DEVICE") or "auto"
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not _has_cuda():
        raise UsageError(f"device {name!r} requested but CUDA is not available here: use --device cpu")
    if name == "mps" and sys.platform != "darwin":
        raise UsageError(f"device {name!r} requested but MPS is not available here: use --device cpu")
    if precision is not None:
        if precision.lower() not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if precision.lower() == "fp16" and (name == "cpu" or (name == "auto" and not _has_cuda())):
            raise UsageError("fp16 is not supported on the CPU: use --precision bf16 or fp32")
