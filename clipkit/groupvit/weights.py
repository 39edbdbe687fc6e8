"""Load and save GroupViT weights: the Hugging Face port's layout and NVlabs' ``.pth`` checkpoints.

Hugging Face layout (``nvidia/groupvit-gcc-yfcc``): a folder with ``config.json`` (``model_type: groupvit``),
``model.safetensors`` (or ``pytorch_model.bin``) and optionally ``preprocessor_config.json``. Its parameter
names are mapped onto ours (which follow the official code) by :func:`hf_to_ours`; the port splits the fused
attention projections into q/k/v, so they are concatenated back. The key correspondence is the inverse of the
port's conversion script (transformers ``convert_groupvit_nvlab_to_hf.py``).

NVlabs layout: ``torch.load(path)["model"]`` (or a bare state dict) with ``img_encoder.*``, ``text_encoder.*``,
``img_projector.*`` (1x1 Conv1d), ``text_projector.*``, ``logit_scale``; architecture = the official
``group_vit_gcc_yfcc_30e.yml`` unless a config is given. Loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from clipkit.groupvit.config import (
    GroupViTConfig,
    from_hf_config,
    to_hf_config,
    to_hf_preprocessor,
)
from clipkit.groupvit.model import GroupViT

# (pattern on the port's name, our name); applied in order, first match wins.
_HF_RULES: list[tuple[str, str]] = [
    (r"^vision_model\.embeddings\.position_embeddings$", "img_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embeddings\.projection\.", "img_encoder.patch_embed.proj."),
    (r"^vision_model\.embeddings\.layernorm\.", "img_encoder.patch_embed.norm."),
    (r"^vision_model\.layernorm\.", "img_encoder.norm."),
    (r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.self_attn\.out_proj\.",
     r"img_encoder.layers.\1.blocks.\2.attn.proj."),
    (r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.layer_norm([12])\.",
     r"img_encoder.layers.\1.blocks.\2.norm\3."),
    (r"^vision_model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.mlp\.", r"img_encoder.layers.\1.blocks.\2.mlp."),
    (r"^vision_model\.encoder\.stages\.(\d+)\.downsample\.pre_assign_attn\.attn\.out_proj\.",
     r"img_encoder.layers.\1.downsample.pre_assign_attn.attn.proj."),
    (r"^vision_model\.encoder\.stages\.(\d+)\.", r"img_encoder.layers.\1."),
    (r"^text_model\.embeddings\.token_embedding\.", "text_encoder.token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "text_encoder.positional_embedding"),
    (r"^text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
     r"text_encoder.transformer.resblocks.\1.attn.out_proj."),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm1\.", r"text_encoder.transformer.resblocks.\1.ln_1."),
    (r"^text_model\.encoder\.layers\.(\d+)\.layer_norm2\.", r"text_encoder.transformer.resblocks.\1.ln_2."),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.", r"text_encoder.transformer.resblocks.\1.mlp.c_fc."),
    (r"^text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.", r"text_encoder.transformer.resblocks.\1.mlp.c_proj."),
    (r"^text_model\.final_layer_norm\.", "text_encoder.ln_final."),
    (r"^visual_projection\.([01])\.", r"img_projector.linear_hidden.\1."),
    (r"^visual_projection\.3\.", "img_projector.linear_out."),
    (r"^text_projection\.([01])\.", r"text_projector.linear_hidden.\1."),
    (r"^text_projection\.3\.", "text_projector.linear_out."),
    (r"^logit_scale$", "logit_scale"),
]
# fused q/k/v: (the port's prefix with q/k/v placeholder, our fused name)
_HF_QKV = [
    (re.compile(r"^vision_model\.encoder\.stages\.(?P<s>\d+)\.layers\.(?P<l>\d+)\.self_attn\."
                r"(?P<which>[qkv])_proj\.(?P<wb>weight|bias)$"),
     "img_encoder.layers.{s}.blocks.{l}.attn.qkv.{wb}"),
    (re.compile(r"^text_model\.encoder\.layers\.(?P<l>\d+)\.self_attn\.(?P<which>[qkv])_proj\.(?P<wb>weight|bias)$"),
     "text_encoder.transformer.resblocks.{l}.attn.in_proj_{wb}"),
]
_IGNORED = re.compile(r"(^text_model\.embeddings\.position_ids$|num_batches_tracked$)")
# keys our model has that weights may lack (training-only temperature); left at their initial value
_OPTIONAL = {"multi_label_logit_scale"}


def hf_to_ours(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a Hugging Face ``GroupViTModel`` state dict to our parameter names (q/k/v fused in q, k, v order)."""
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[str, Tensor]] = {}
    for name, value in sd.items():
        if _IGNORED.search(name):
            continue
        for pat, fmt in _HF_QKV:
            m = pat.match(name)
            if m:
                target = fmt.format(**m.groupdict())
                fused.setdefault(target, {})[m["which"]] = value
                break
        else:
            for pat, repl in _HF_RULES:
                new, n = re.subn(pat, repl, name)
                if n:
                    out[new] = value
                    break
            else:
                raise KeyError(f"unexpected parameter {name!r} in a Hugging Face GroupViT checkpoint")
    for target, parts in fused.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"incomplete q/k/v projections for {target!r}")
        out[target] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def ours_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`hf_to_ours` (drops ``multi_label_logit_scale``, which the port has no slot for)."""
    out: dict[str, Tensor] = {}
    inverse = [
        (r"^img_encoder\.pos_embed$", "vision_model.embeddings.position_embeddings"),
        (r"^img_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embeddings.projection."),
        (r"^img_encoder\.patch_embed\.norm\.", "vision_model.embeddings.layernorm."),
        (r"^img_encoder\.norm\.", "vision_model.layernorm."),
        (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.",
         r"vision_model.encoder.stages.\1.layers.\2.self_attn.out_proj."),
        (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.norm([12])\.",
         r"vision_model.encoder.stages.\1.layers.\2.layer_norm\3."),
        (r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.stages.\1.layers.\2.mlp."),
        (r"^img_encoder\.layers\.(\d+)\.downsample\.pre_assign_attn\.attn\.proj\.",
         r"vision_model.encoder.stages.\1.downsample.pre_assign_attn.attn.out_proj."),
        (r"^img_encoder\.layers\.(\d+)\.", r"vision_model.encoder.stages.\1."),
        (r"^text_encoder\.token_embedding\.", "text_model.embeddings.token_embedding."),
        (r"^text_encoder\.positional_embedding$", "text_model.embeddings.position_embedding.weight"),
        (r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.",
         r"text_model.encoder.layers.\1.self_attn.out_proj."),
        (r"^text_encoder\.transformer\.resblocks\.(\d+)\.ln_([12])\.", r"text_model.encoder.layers.\1.layer_norm\2."),
        (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_model.encoder.layers.\1.mlp.fc1."),
        (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_model.encoder.layers.\1.mlp.fc2."),
        (r"^text_encoder\.ln_final\.", "text_model.final_layer_norm."),
        (r"^img_projector\.linear_hidden\.([01])\.", r"visual_projection.\1."),
        (r"^img_projector\.linear_out\.", "visual_projection.3."),
        (r"^text_projector\.linear_hidden\.([01])\.", r"text_projection.\1."),
        (r"^text_projector\.linear_out\.", "text_projection.3."),
        (r"^logit_scale$", "logit_scale"),
    ]
    for name, value in sd.items():
        if name in _OPTIONAL:
            continue
        m = re.match(r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", name)
        t = re.match(r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", name)
        if m or t:
            q, k, v = value.chunk(3, dim=0)
            base = (f"vision_model.encoder.stages.{m[1]}.layers.{m[2]}.self_attn.{{}}_proj.{m[3]}" if m
                    else f"text_model.encoder.layers.{t[1]}.self_attn.{{}}_proj.{t[2]}")
            for which, part in zip("qkv", (q, k, v), strict=True):
                out[base.format(which)] = part.contiguous()
            continue
        for pat, repl in inverse:
            new, n = re.subn(pat, repl, name)
            if n:
                out[new] = value.contiguous()
                break
        else:
            raise KeyError(f"no Hugging Face name for {name!r}")
    return out


def nvlabs_to_ours(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """An official checkpoint's ``model`` dict -> ours: strip ``module.``, squeeze the projectors' 1x1 Conv1d."""
    out = {}
    for name, value in sd.items():
        name = name.removeprefix("module.")
        if name.endswith("num_batches_tracked"):
            continue
        if re.match(r"^(img|text)_projector\.linear_(hidden\.\d+|out)\.weight$", name) and value.ndim == 3:
            value = value[..., 0]
        out[name] = value
    return out


def _load_into(model: GroupViT, sd: dict[str, Tensor], source: str) -> GroupViT:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k not in _OPTIONAL and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not fit the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.eval()


def is_hf_groupvit_dir(path: str | Path) -> bool:
    """True if ``path`` is a folder with a Hugging Face ``config.json`` whose model_type is groupvit."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "groupvit"
    except (OSError, ValueError):
        return False


def load_hf_dir(path: str | Path) -> GroupViT:
    """Load a Hugging Face layout folder (config.json + model.safetensors / pytorch_model.bin)."""
    path = Path(path)
    hf_cfg = json.loads((path / "config.json").read_text())
    pre = path / "preprocessor_config.json"
    cfg = from_hf_config(hf_cfg, json.loads(pre.read_text()) if pre.is_file() else None)
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        sd = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
    return _load_into(GroupViT(cfg), hf_to_ours(sd), str(path))


def load_nvlabs_pth(path: str | Path, cfg: GroupViTConfig | None = None) -> GroupViT:
    """Load an NVlabs checkpoint (``{"model": state_dict, ...}``); ``cfg`` defaults to the official gcc+yfcc one."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a GroupViT checkpoint (expected a dict with a 'model' state dict)")
    sd = nvlabs_to_ours(sd)
    if cfg is None:
        cfg = GroupViTConfig()
        pos = sd.get("img_encoder.pos_embed")
        if pos is not None:  # resolution from the checkpoint itself
            cfg.vision.image_size = round(pos.shape[1] ** 0.5) * cfg.vision.patch_size
    return _load_into(GroupViT(cfg), sd, str(path))


def save_hf_dir(model: GroupViT, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
    """Write ``model`` in the Hugging Face port's layout (config.json, preprocessor_config.json, safetensors).

    ``dtype`` applies to floating-point tensors (float16 halves the file; loading casts back to float32)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()
          for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    hf = ours_to_hf(sd)
    tmp = path / "model.safetensors.tmp"
    save_file(hf, str(tmp), metadata={"format": "pt"})
    tmp.replace(path / "model.safetensors")
    for name, obj in (("config.json", to_hf_config(model.cfg)), ("preprocessor_config.json",
                                                                 to_hf_preprocessor(model.cfg))):
        t = path / f"{name}.tmp"
        t.write_text(json.dumps(obj, indent=2) + "\n")
        t.replace(path / name)


def load_groupvit(path: str | Path) -> GroupViT:
    """Load GroupViT weights from a Hugging Face layout folder or an NVlabs ``.pth``/``.pt`` file."""
    path = Path(path)
    if path.is_dir():
        if not is_hf_groupvit_dir(path):
            raise ValueError(f"{path}: no config.json with model_type 'groupvit'")
        return load_hf_dir(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        return load_nvlabs_pth(path)
    raise ValueError(f"{path}: expected a Hugging Face GroupViT folder or an NVlabs .pth checkpoint")
