"""The catalogue behind ``clipkit models``: bundled models plus every open_clip (architecture, tag) pair."""

from __future__ import annotations

from typing import Any

from clipkit import hub
from clipkit.registry import local_models


def list_models() -> list[dict[str, Any]]:
    """Rows ``{"model", "pretrained", "kind", "local"}``; ``local`` is True when no download is needed."""
    from clipkit.openclip_import import open_clip_module

    open_clip = open_clip_module()

    rows: list[dict[str, Any]] = []
    for row in local_models():
        rows.append({"model": row["model"], "pretrained": "bundled", "kind": row["kind"], "local": True})
    for arch, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        rows.append({"model": arch, "pretrained": tag, "kind": "open_clip",
                     "local": hub.cached_tag_weights(cfg) is not None})
    return rows
