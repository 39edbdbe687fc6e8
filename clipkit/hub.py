"""Finding pretrained weights without waiting on a network that is not there.

open_clip downloads weights on demand and, offline, spends ~47 s in retries before failing. clipkit first looks
for the files in the local caches (Hugging Face hub cache, open_clip's ``~/.cache/clip``); only when they are
missing, and the user has not asked to stay offline, does it probe the hub for at most ``PROBE_TIMEOUT_S`` and
then let open_clip download. Offline is ``--offline``, ``$CLIPKIT_OFFLINE`` or ``$HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from clipkit.errors import ModelError

PROBE_TIMEOUT_S = 1.5
_TRUE = {"1", "true", "yes", "on"}


def offline_requested(offline: bool | None = None) -> bool:
    """True when the user asked for offline use (argument, ``$CLIPKIT_OFFLINE`` or ``$HF_HUB_OFFLINE``)."""
    if offline is not None:
        return offline
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("CLIPKIT_OFFLINE", "HF_HUB_OFFLINE"))


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens within ``timeout`` seconds.

    The connection runs in a daemon thread because DNS resolution ignores socket timeouts.
    """
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _from_hf_cache(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return found if isinstance(found, str) else None


def _safe_alternatives(filename: str) -> list[str]:
    """The safetensors twins open_clip prefers, then the file itself."""
    names = []
    if filename == "open_clip_pytorch_model.bin":
        names.append("open_clip_model.safetensors")
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    return [*names, filename]


def cached_tag_weights(cfg: dict) -> str | None:
    """The local path of an open_clip pretrained tag's weights if they are already cached, else None."""
    if cfg.get("file"):
        return cfg["file"]
    if cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/file.bin", or "org/repo/" for its default weights file name.
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        for name in _safe_alternatives(filename):
            found = _from_hf_cache(repo_id, name)
            if found:
                return found
    if cfg.get("url"):
        candidate = Path("~/.cache/clip").expanduser() / os.path.basename(urlparse(cfg["url"]).path)
        if candidate.is_file():
            return str(candidate)
    return None


def cached_hub_folder(repo_id: str) -> str | None:
    """The local snapshot folder of an ``hf-hub:`` open_clip model if config and weights are cached."""
    config = _from_hf_cache(repo_id, "open_clip_config.json")
    if not config:
        return None
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if _from_hf_cache(repo_id, name):
            return str(Path(config).parent)
    return None


def ensure_can_download(what: str, offline: bool | None) -> None:
    """Raise a one-line ModelError unless downloading ``what`` can possibly work right now."""
    hint = (
        "use local weights: --model ARCH --pretrained /path/to/weights.safetensors, or --model /path/to/folder "
        "holding open_clip_config.json and open_clip_model.safetensors"
    )
    if offline_requested(offline):
        raise ModelError(f"{what}: not cached, and offline mode is on; {hint}")
    if not hub_reachable():
        raise ModelError(f"{what}: not cached, and the model hub cannot be reached (offline?); {hint}")
