"""Import open_clip without ``transformers`` until a model needs it (issue 20, item 7: the one-image call).

``import open_clip`` imports ``open_clip.hf_model``, which imports ``transformers`` at module level (about 1 s
of a 5–6 s start-up on this machine) although only models whose text tower is a Hugging Face model
(``text_cfg.hf_model_name``: the xlm-roberta and mt5 CLIPs, some hf-hub models) use it. :func:`open_clip_module`
imports open_clip with ``transformers`` hidden — ``hf_model`` then takes its own ``ImportError`` branch, which
open_clip supports for installs without transformers — and :func:`enable_hf_text` brings it back (reloads
``open_clip.hf_model`` with transformers importable and re-points ``open_clip.model.HFTextEncoder``, the one
place open_clip uses it) before such a model is built. Tokenizers import transformers lazily, so they are not
affected. If transformers was imported before, or ``CLIPKIT_EAGER_OPEN_CLIP=1`` is set, open_clip is imported
as usual.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any


class _Hide:
    """A meta-path finder that makes ``transformers`` (and its submodules) look absent."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError(f"{name} deferred by clipkit (imported when a model needs it)")
        return None


def open_clip_module() -> ModuleType:
    """``open_clip``, imported without transformers when this process has not imported it yet."""
    if "open_clip" in sys.modules:
        return sys.modules["open_clip"]
    if "transformers" in sys.modules or os.environ.get("CLIPKIT_EAGER_OPEN_CLIP") == "1":
        return importlib.import_module("open_clip")
    hide = _Hide()
    sys.meta_path.insert(0, hide)
    try:
        return importlib.import_module("open_clip")
    finally:
        sys.meta_path.remove(hide)


def enable_hf_text() -> None:
    """Make open_clip able to build Hugging Face text towers (no-op when it already can, or when transformers
    is not installed: open_clip then raises its own message)."""
    open_clip = open_clip_module()
    hf_model = importlib.import_module("open_clip.hf_model")
    if getattr(hf_model, "transformers", None) is not None:
        return
    try:
        importlib.import_module("transformers")
    except ImportError:
        return
    hf_model = importlib.reload(hf_model)
    open_clip.model.HFTextEncoder = hf_model.HFTextEncoder


def needs_hf_text(model_cfg: dict | None) -> bool:
    """Whether an open_clip model config has a Hugging Face text tower (unknown config: assume it may)."""
    if model_cfg is None:
        return True
    return bool(model_cfg.get("text_cfg", {}).get("hf_model_name"))
