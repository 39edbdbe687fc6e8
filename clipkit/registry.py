"""One model registry: a model spec in, a ready-to-use ``LoadedModel`` out.

Accepted specs (``load_model(model, pretrained)``):

* a bundled model name (``shapes-clip``): a folder under ``clipkit/assets/`` in open_clip's hub layout;
* ``PATH`` to a folder holding ``open_clip_config.json`` and ``open_clip_model.safetensors``;
* ``hf-hub:org/repo``;
* an open_clip architecture plus a pretrained tag (``ViT-B-32`` + ``openai``, or ``ViT-B-32:openai``); OpenAI tags
  are mapped to the ``-quickgelu`` architectures they were trained with;
* an architecture plus ``pretrained=FILE`` (.safetensors, or .pt/.bin/.pth loaded with ``weights_only=True``
  unless ``trust_checkpoint``), or ``pretrained="random"`` for random weights (benchmarks, tests; seeded: the
  same weights in every process).

One model is loaded per (spec, device, precision) per process.

The registry loads every model kind clipkit runs: CLIPs (:func:`load_model`), GroupViTs
(:func:`load_groupvit_model`; ``load(spec, kind="group")`` picks a GroupViT or a CLIP for the fallback) and LSeg
heads (:func:`load_head`). :func:`local_models` lists what is on this machine, with its kind. Methods ask the
registry; they never open weight files themselves.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipkit import hub
from clipkit.attention import contiguous_attention
from clipkit.device import inference, resolve_device, resolve_precision
from clipkit.errors import ModelError
from clipkit.openclip_import import enable_hf_text, needs_hf_text, open_clip_module

DEFAULT_MODEL = "shapes-clip"
ASSETS = Path(__file__).parent / "assets"
_CACHE: dict[tuple, LoadedModel] = {}


@dataclass
class LoadedModel:
    """A CLIP-family model ready for inference, with everything needed to feed it.

    ``model`` is an open_clip model in eval mode with frozen weights; ``preprocess`` maps an RGB ``PIL.Image`` to a
    float32 tensor ``[3, H, W]``; ``tokenizer`` maps ``list[str]`` to a LongTensor ``[N, context_length]``.
    """

    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    name: str
    identity: str
    device: torch.device
    precision: str
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    is_siglip: bool
    default_templates: str = "openai"
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def logit_scale(self) -> float:
        """exp(learned log-scale), as CLIP multiplies cosine similarities before softmax."""
        return float(self.model.logit_scale.exp().item())

    @property
    def logit_bias(self) -> float | None:
        """SigLIP's learned bias (None for softmax models)."""
        bias = getattr(self.model, "logit_bias", None)
        return None if bias is None else float(bias.item())

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` preprocessed pixels -> ``[B, D]`` L2-normalised float32 embeddings."""
        with inference(self.device, self.precision):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return F.normalize(features.float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``N`` strings -> ``[N, D]`` L2-normalised float32 embeddings."""
        tokens = self.tokenizer(texts).to(self.device)
        with inference(self.device, self.precision):
            features = encode_tokens(self.model, tokens)
        return F.normalize(features.float(), dim=-1)


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's ``encode_text`` on the real tokens only, when that gives the same result.

    open_clip pads every prompt to the context length (77); a causal text tower pooled at the end token never
    lets a real position see the padding after it, so cutting the batch to its longest real prompt (start and
    end tokens included) changes nothing but the cost, which falls with the square of the length. Other towers
    (no causal mask, "last"/"first" pooling, custom text models) run unchanged. Returns ``[N, D]`` unnormalised.
    """
    from open_clip.transformer import text_global_pool

    mask = getattr(model, "attn_mask", None)
    pool = getattr(model, "text_pool_type", None)
    if type(model).__name__ != "CLIP" or mask is None or pool not in ("argmax", "eos") or tokens.ndim != 2:
        return model.encode_text(tokens)
    used = (tokens != 0).any(dim=0).nonzero()
    n = int(used.max()) + 1 if len(used) else tokens.shape[1]
    tokens = tokens[:, :n]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:n, :n]))
    x = text_global_pool(x, tokens, pool, eos_token_id=getattr(model, "text_eos_id", None))
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def bundled_models() -> dict[str, Path]:
    """Bundled model name -> its folder (only folders that hold an open_clip or clipkit config)."""
    if not ASSETS.is_dir():
        return {}
    configs = ("open_clip_config.json", "clipkit.json", "lseg_config.json")
    return {p.name: p for p in sorted(ASSETS.iterdir()) if p.is_dir() and any((p / n).is_file() for n in configs)}


def _split_spec(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """``ViT-B-32:openai`` -> (``ViT-B-32``, ``openai``); paths and ``hf-hub:`` specs pass through."""
    if (pretrained is None and ":" in model and not model.startswith(("hf-hub:", "local-dir:"))
            and not Path(model).exists()):
        arch, _, tag = model.partition(":")
        return arch, tag
    return model, pretrained


def _file_identity(path: Path) -> str:
    """Content hash for small files (bundled models), size + mtime for large ones."""
    stat = path.stat()
    if stat.st_size <= 64 * 2**20:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def _folder_weights(folder: Path) -> Path | None:
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                 "open_clip_pytorch_model.bin", "model.safetensors"):
        if (folder / name).is_file():
            return folder / name
    return None


def _resolve(model: str, pretrained: str | None, offline: bool | None) -> dict:
    """Turn a user spec into open_clip arguments: {"name", "pretrained", "folder", "identity", "meta"}."""
    open_clip = open_clip_module()

    model, pretrained = _split_spec(model, pretrained)
    bundled = bundled_models()
    folder: Path | None = None
    if model in bundled:
        folder = bundled[model]
    elif Path(model).expanduser().is_dir():
        folder = Path(model).expanduser().resolve()
    if folder is not None:
        meta = json.loads((folder / "clipkit.json").read_text()) if (folder / "clipkit.json").is_file() else {}
        kind = _kind_of(folder)
        if kind != "clip":
            use = {"groupvit": "`clipkit group`", "lseg-head": "`clipkit segment --head`"}.get(kind, kind)
            raise ModelError(f"{model} is a {kind} model, not a CLIP: use it with {use}")
        weights = _folder_weights(folder)
        if not (folder / "open_clip_config.json").is_file() or weights is None:
            raise ModelError(
                f"{folder} is not an open_clip model folder: it needs open_clip_config.json and "
                "open_clip_model.safetensors"
            )
        return {"name": f"local-dir:{folder}", "pretrained": None, "folder": folder, "meta": meta,
                "identity": f"{folder.name}:{_file_identity(weights)}"}
    if Path(model).expanduser().is_file():
        raise ModelError(f"{model} is a weights file: pass the architecture as --model and the file as --pretrained")
    if model.startswith("hf-hub:"):
        repo = model[len("hf-hub:"):]
        local = hub.cached_hub_folder(repo)
        if local:
            return {"name": f"local-dir:{local}", "pretrained": None, "folder": Path(local), "meta": {},
                    "identity": f"hf-hub:{repo}:{Path(local).name}"}
        hub.ensure_can_download(f"hf-hub:{repo}", offline)
        return {"name": model, "pretrained": None, "folder": None, "meta": {}, "identity": model}
    arch = model.replace("/", "-")
    if arch not in open_clip.list_models():
        names = ", ".join([*bundled, "ViT-B-32", "ViT-B-16", "RN50", "…"])
        raise ModelError(f"unknown model {model!r}: try one of {names} (`clipkit models` lists all)")
    if pretrained is None:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none published"
        raise ModelError(f"{arch} needs weights: --pretrained TAG ({tags}), FILE, or 'random'")
    if pretrained == "random":
        return {"name": arch, "pretrained": None, "folder": None, "meta": {}, "identity": f"{arch}:random"}
    if Path(pretrained).expanduser().is_file():
        weights = Path(pretrained).expanduser().resolve()
        return {"name": arch, "pretrained": str(weights), "folder": None, "meta": {},
                "identity": f"{arch}:{_file_identity(weights)}"}
    if pretrained.startswith("openai") and not arch.endswith("-quickgelu") \
            and f"{arch}-quickgelu" in open_clip.list_models():
        arch = f"{arch}-quickgelu"  # OpenAI weights were trained with QuickGELU; plain GELU is silently worse
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ModelError(f"unknown pretrained tag {pretrained!r} for {arch}: use one of {tags}, a file, or 'random'")
    cached = hub.cached_tag_weights(cfg)
    if cached is None:
        hub.ensure_can_download(f"{arch} ({pretrained}) weights", offline)
    return {"name": arch, "pretrained": cached or pretrained, "folder": None, "meta": {},
            "identity": f"{arch}:{pretrained}"}


def _model_config(resolved: dict, open_clip: Any) -> dict | None:
    """The open_clip model config a resolved spec will build (None when only a download would tell)."""
    folder = resolved["folder"]
    if folder is not None:
        return json.loads((Path(folder) / "open_clip_config.json").read_text()).get("model_cfg")
    if resolved["name"].startswith("hf-hub:"):
        return None
    return open_clip.get_model_config(resolved["name"])


def _create(resolved: dict, device: torch.device, trust_checkpoint: bool) -> tuple[torch.nn.Module, Any]:
    """Build the open_clip model and its eval transform, turning loader failures into one-line ModelErrors."""
    open_clip = open_clip_module()
    if needs_hf_text(_model_config(resolved, open_clip)):
        enable_hf_text()

    has_weights = resolved["pretrained"] or resolved["folder"] or resolved["name"].startswith("hf-hub:")
    try:
        if not has_weights:  # pretrained="random": seeded apart from the caller's RNG, so that every process
            with torch.random.fork_rng(devices=[]):  # (workers, Ray actors, shards of a split run) agrees
                torch.manual_seed(0)
                model, _, preprocess = open_clip.create_model_and_transforms(resolved["name"], device=device)
            return model, preprocess
        return open_clip.create_model_from_pretrained(
            resolved["name"], pretrained=resolved["pretrained"], device=device, weights_only=not trust_checkpoint
        )
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc):
            raise ModelError(f"could not load {resolved['name']}: the weights file is not a checkpoint "
                             f"({str(exc).splitlines()[0][:200]})") from exc
        raise ModelError(
            "the checkpoint holds pickled Python objects that could run code when loaded; "
            "re-run with --trust-checkpoint only if you trust its source"
        ) from exc
    except Exception as exc:  # any loader failure (corrupt safetensors, a text file as weights…) is one line
        if isinstance(exc, ModelError):
            raise
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"could not load {resolved['name']}: {first[:300]} (is the weights file complete and "
                         "of this architecture?)") from exc


def load_model(
    model: str | None = None,
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = None,
    precision: str | None = None,
    offline: bool | None = None,
    trust_checkpoint: bool = False,
) -> LoadedModel:
    """Load (once per process) the model named by ``model``/``pretrained``; see the module docstring."""
    open_clip = open_clip_module()

    spec = model or DEFAULT_MODEL
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    key = (spec, pretrained, str(dev), prec, trust_checkpoint)
    if key in _CACHE:
        return _CACHE[key]
    if spec == DEFAULT_MODEL and spec not in bundled_models():
        raise ModelError(f"the bundled model {DEFAULT_MODEL!r} is missing from this install: reinstall clipkit")
    resolved = _resolve(spec, pretrained, offline)
    net, preprocess = _create(resolved, dev, trust_checkpoint)
    net.eval().requires_grad_(False)
    contiguous_attention(net)  # same maths; stock attention is slow for odd head counts (clipkit.attention)
    cfg = open_clip.get_model_preprocess_cfg(net)
    size = cfg.get("size", 224)
    image_size = (size, size) if isinstance(size, int) else tuple(size)
    loaded = LoadedModel(
        model=net,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(resolved["name"]),
        name=spec if pretrained is None else f"{spec}:{pretrained}",
        identity=resolved["identity"],
        device=dev,
        precision=prec,
        image_size=image_size,
        mean=tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
        is_siglip=getattr(net, "logit_bias", None) is not None,
        default_templates=resolved["meta"].get("default_templates", "openai"),
        path=resolved["folder"],
        meta=resolved["meta"],
    )
    _CACHE[key] = loaded
    return loaded


# ---------------------------------------------------------------------------------------------------- GroupViT
DEFAULT_GROUPVIT = "shapes-groupvit"


@dataclass
class GroupViTModel:
    """A loaded GroupViT: the network plus what inference needs (``meta`` from the folder's clipkit.json)."""

    net: Any
    name: str
    device: torch.device
    identity: str  # the text cache's key for these weights (:func:`clipkit.prompts.cached_embeddings`)
    path: Path | None = None
    meta: dict = field(default_factory=dict)


def _kind_of(folder: Path) -> str:
    meta = folder / "clipkit.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("kind", "clip")
    return "lseg-head" if (folder / "lseg_config.json").is_file() else "clip"


def groupvit_source(model: str | None, pretrained: str | None = None) -> Path | None:
    """The folder/file of a GroupViT spec, or None when ``model`` names something else (an open_clip model)."""
    from clipkit.groupvit.weights import is_hf_groupvit_dir

    spec = model or DEFAULT_GROUPVIT
    if pretrained is not None:
        return None
    bundled = bundled_models()
    if spec in bundled:
        return bundled[spec] if _kind_of(bundled[spec]) == "groupvit" else None
    path = Path(spec).expanduser()
    if path.is_dir() and is_hf_groupvit_dir(path):
        return path.resolve()
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return path.resolve()
    return None


def load_groupvit_model(model: str | None = None, pretrained: str | None = None, *, device: str | None = None,
                        precision: str | None = None, offline: bool | None = None,
                        trust_checkpoint: bool = False) -> GroupViTModel | LoadedModel:
    """A GroupViT for GroupViT specs (default ``shapes-groupvit``), else :func:`load_model` (the fallback)."""
    from clipkit.errors import UsageError

    source = groupvit_source(model, pretrained)
    if source is None:
        if model is None:
            raise ModelError(f"the bundled model {DEFAULT_GROUPVIT!r} is missing from this install: reinstall "
                             "clipkit")
        return load_model(model, pretrained, device=device, precision=precision, offline=offline,
                          trust_checkpoint=trust_checkpoint)
    if precision not in (None, "fp32"):
        raise UsageError("GroupViT runs in fp32 (its hard assignment is an argmax over close scores)")
    dev = resolve_device(device)
    key = ("groupvit", str(source), str(dev))
    if key in _CACHE:
        return _CACHE[key]  # type: ignore[return-value]
    from clipkit.groupvit.weights import load_groupvit

    try:
        net = load_groupvit(source)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ModelError(f"could not load GroupViT weights from {source}: {str(exc).splitlines()[0][:300]}") from exc
    meta = json.loads((source / "clipkit.json").read_text()) if (source / "clipkit.json").is_file() else {}
    weights = next((source / n for n in ("model.safetensors", "pytorch_model.bin") if (source / n).is_file()), source)
    loaded = GroupViTModel(net.to(dev).eval().requires_grad_(False), model or DEFAULT_GROUPVIT, dev,
                           f"groupvit:{source.name}:{_file_identity(weights)}", source, meta)
    _CACHE[key] = loaded  # type: ignore[assignment]
    return loaded


def load(model: str | None = None, pretrained: str | None = None, *, kind: str = "clip", **options: Any) -> Any:
    """The model a method of ``kind`` runs on: ``"clip"`` → :func:`load_model`; ``"group"`` →
    :func:`load_groupvit_model` (a GroupViT, or a CLIP for the training-free fallback)."""
    if kind == "group":
        return load_groupvit_model(model, pretrained, **options)
    return load_model(model, pretrained, **options)


def load_head(spec: str | Path, model: Any | None = None) -> Any:
    """An LSeg head by bundled name (``lseg-shapes``) or path (its folder, or exactly the ``.safetensors``
    named), checked against ``model``'s image tower (:func:`clipkit.lseg.load_head`)."""
    from clipkit import lseg

    return lseg.load_head(spec, model)


def local_models() -> list[dict[str, Any]]:
    """Every bundled model with its kind (``clip``, ``groupvit``, ``lseg-head``): rows ``{"model", "kind",
    "path"}``."""
    return [{"model": name, "kind": _kind_of(folder), "path": str(folder)} for name, folder in
            bundled_models().items()]
