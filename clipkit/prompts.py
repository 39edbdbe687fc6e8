"""The prompt-template engine: labels in, one ensembled text embedding per label out.

CLIP's zero-shot recipe (Radford et al. 2021, open_clip's ``build_zero_shot_classifier``): render every template
with the label, encode, L2-normalise, average, renormalise. Named template sets come from open_clip's metadata:
``openai`` (the 80 ImageNet templates), ``simple`` (the 7-template subset), ``none`` (the bare label). Users may
give a file (one template per line, ``{}`` or ``{label}`` marks the label) or inline templates containing ``{}``.

Ensembled embeddings are cached in memory and on disk under ``$XDG_CACHE_HOME/clipkit/text/`` keyed by the model's
identity, the template list and the label, so re-running over a folder does not re-encode thousands of prompts
(:func:`cached_embeddings`, shared with GroupViT's own text tower).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipkit.errors import UsageError

if TYPE_CHECKING:
    import torch

    from clipkit.registry import LoadedModel

_MEMORY: dict[str, object] = {}
TEMPLATE_SETS = ("openai", "simple", "none")


def template_sets() -> dict[str, list[str]]:
    """Name -> templates with ``{}`` for the label (built from open_clip's own template lists)."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    return {
        "openai": [t("{}") for t in OPENAI_IMAGENET_TEMPLATES],
        "simple": [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES],
        "none": ["{}"],
    }


def _check_template(template: str, source: str) -> str:
    template = template.replace("{label}", "{}")
    if template.count("{}") != 1 or "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        raise UsageError(f"template {template!r} from {source} must contain the label placeholder {{}} exactly once "
                         "and no other braces")
    return template


def check_templates(spec: str | Sequence[str] | None) -> None:
    """Raise the usage error :func:`resolve_templates` would, without building the sets (no torch import)."""
    if spec is None or (isinstance(spec, str) and spec in TEMPLATE_SETS):
        return
    _templates_from(spec, TEMPLATE_SETS)


def _templates_from(spec: str | Sequence[str], sets: dict[str, list[str]] | Sequence[str]) -> list[str]:
    if not isinstance(spec, str):
        templates = [_check_template(t, "the template list") for t in spec]
        if not templates:
            raise UsageError("the template list is empty")
        return templates
    if "{" in spec:
        return [_check_template(spec, "--templates")]
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read template file {path}: {exc}") from None
        lines = [ln.strip() for ln in text.splitlines()]
        templates = [_check_template(ln, str(path)) for ln in lines if ln and not ln.startswith("#")]
        if not templates:
            raise UsageError(f"template file {path} holds no templates")
        return templates
    raise UsageError(f"unknown template set {spec!r}: use {', '.join(sets)}, a file, or a template containing {{}}")


def resolve_templates(spec: str | Sequence[str] | None = None, model: LoadedModel | None = None) -> list[str]:
    """Templates from a set name, a file path, an inline template (``"a photo of {}"``) or a list of templates.

    ``None`` means the model's default set (bundled models declare theirs; open_clip models use ``openai``).
    """
    if spec is None:
        spec = model.default_templates if model is not None else "openai"
    if isinstance(spec, str) and spec in TEMPLATE_SETS:
        return template_sets()[spec]
    return _templates_from(spec, TEMPLATE_SETS)


def parse_labels(labels: str | Sequence[str] | None = None, labels_file: str | Path | None = None) -> list[str]:
    """Labels from ``"a,b,c"`` (or a list) and/or a file with one label per line; order kept.

    Empty, blank or duplicate labels are usage errors, as is giving no label at all.
    """
    found: list[str] = []
    if labels is not None:
        # CSV rules: a label holding a comma is quoted, e.g. --labels 'cat,"salt, pepper"'
        items = (next(csv.reader([labels], skipinitialspace=True), None) or [""]) if isinstance(labels, str) \
            else list(labels)
        for item in items:
            if not item.strip():
                raise UsageError("empty label in --labels: remove the stray comma or blank entry")
            found.append(item.strip())
    if labels_file is not None:
        path = Path(labels_file).expanduser()
        if not path.is_file():
            raise UsageError(f"labels file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first label
        except UnicodeDecodeError as exc:
            raise UsageError(f"labels file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        found.extend(ln.strip() for ln in text.splitlines() if ln.strip())
    if not found:
        raise UsageError("no labels given: use --labels a,b,c or --labels-file FILE")
    seen: dict[str, str] = {}
    for label in found:
        if label in seen.values():
            raise UsageError(f"duplicate label {label!r}: each label must appear once")
        if label.lower() in seen:
            raise UsageError(f"labels {seen[label.lower()]!r} and {label!r} differ only in case: CLIP's tokenizer "
                             "lowercases text, so they would get the same embedding")
        seen[label.lower()] = label
    return found


def _warn_once(message: str, _seen: set[str] = set()) -> None:  # noqa: B006 (the set is the memory)
    if message not in _seen:
        _seen.add(message)
        import sys

        print(f"warning: {message}", file=sys.stderr)


def cache_dir() -> Path:
    """Where text embeddings are cached: ``$CLIPKIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/clipkit`` (~/.cache)."""
    root = os.environ.get("CLIPKIT_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipkit"


def _key(identity: str, precision: str, templates: Sequence[str], label: str) -> str:
    text = "\x00".join([identity, precision, "\x1f".join(templates), label])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encode_labels(model: LoadedModel, labels: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """``[len(labels), D]`` per-label template ensembles, encoded in chunks of at most 256 prompts."""
    import torch
    import torch.nn.functional as F

    out = []
    per_chunk = max(1, 256 // len(templates))
    for start in range(0, len(labels), per_chunk):
        chunk = labels[start:start + per_chunk]
        prompts = [t.format(label) for label in chunk for t in templates]
        emb = model.encode_text(prompts).view(len(chunk), len(templates), -1)
        out.append(F.normalize(emb.mean(dim=1), dim=-1))
    return torch.cat(out).cpu()


def text_embeddings(
    model: LoadedModel,
    labels: Sequence[str],
    templates: str | Sequence[str] | None = None,
    *,
    cache: bool = True,
) -> torch.Tensor:
    """Ensembled, L2-normalised text embeddings ``[N, D]`` float32 on ``model.device``, one row per label."""
    rendered = resolve_templates(templates, model)
    rows = cached_embeddings(model.identity, model.precision, rendered, labels,
                             lambda missing: _encode_labels(model, missing, rendered), cache=cache)
    return rows.to(model.device)


def cached_embeddings(
    identity: str,
    precision: str,
    templates: Sequence[str],
    labels: Sequence[str],
    encode: Callable[[list[str]], torch.Tensor],
    *,
    cache: bool = True,
) -> torch.Tensor:
    """The one text cache: ``[N, D]`` float32 CPU rows, one per label, from memory, else from the disk cache
    (``cache``), else ``encode(missing labels)`` (``[len(missing), D]``, then cached). Keyed by the model's
    ``identity``, its ``precision``, the rendered ``templates`` and the label: CLIP models
    (:func:`text_embeddings`) and GroupViT's own text tower (``clipkit group``) share it."""
    import numpy as np
    import torch

    from clipkit.writers import atomic_write_bytes

    keys = [_key(identity, precision, templates, label) for label in labels]
    folder = cache_dir() / "text"
    rows: dict[int, torch.Tensor] = {}
    for i, key in enumerate(keys):
        if key in _MEMORY:
            rows[i] = _MEMORY[key]  # type: ignore[assignment]
        elif cache and (folder / f"{key}.npy").is_file():
            with contextlib.suppress(OSError, ValueError):  # a torn or corrupt entry is simply recomputed
                row = np.load(folder / f"{key}.npy")
                if row.ndim == 1 and np.isfinite(row).all():
                    rows[i] = torch.from_numpy(row)
    missing = [i for i in range(len(labels)) if i not in rows]
    if missing:
        fresh = encode([labels[i] for i in missing]).float().cpu()
        for i, row in zip(missing, fresh, strict=True):
            rows[i] = row
            if cache:
                buffer = io.BytesIO()
                np.save(buffer, row.numpy())
                try:
                    atomic_write_bytes(folder / f"{keys[i]}.npy", buffer.getvalue())
                except OSError as exc:  # caching is best-effort: a read-only cache must not stop a run
                    _warn_once(f"text-embedding cache {folder} is not writable ({exc.strerror}); going on "
                               "without it")
                    cache = False
    for i, key in enumerate(keys):
        _MEMORY[key] = rows[i]
    return torch.stack([rows[i] for i in range(len(labels))]).float()
