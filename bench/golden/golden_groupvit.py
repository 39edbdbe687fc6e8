"""Golden GroupViT outputs from NVlabs/GroupViT on a tiny perturbed image encoder + projector.

Official code run: ``models/group_vit.py`` (``GroupViT``, imported from the repository file with ``models/misc.py``;
``models/builder.py`` replaced by a no-op registry, and timm's ``DropPath``/``to_2tuple``/``trunc_normal_`` by
plain stand-ins — drop-path is 0, init is overwritten); ``ProjectMLP`` and ``MultiLabelContrastive.encode_image``
from ``models/multi_label_contrastive.py`` and ``resize_attn_map``, ``GroupViTSegInference.get_attn_maps`` and
``.encode_decode`` from ``segmentation/evaluation/group_vit_seg.py``, each compiled alone from its source (those
files import mmcv/mmseg/diffdist). einops is needed (``pip install --target /tmp/golden_deps einops`` is enough).
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import official
import torch
import torch.nn.functional as F
from torch import nn

REPO = "NVlabs/GroupViT"
#: NVlabs ``GroupViT`` kwargs of the tiny encoder; the projector is ``ProjectMLP(32, 48, 24)``
ENC = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depths": [2, 1, 1], "num_heads": [2, 2, 2],
       "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4], "drop_path_rate": 0.0}
PROJ = {"in_dim": 32, "inner_dim": 48, "out_dim": 24}
LOGIT_SCALE = math.log(150.0)  # above the official clamp at 100, so the clamp is exercised
SEED = 0
#: generator seed for the perturbation and inputs: the first (from 1) whose square batch's final grouping uses
#: several groups per image (many seeds send every patch to one group, which would leave the rule untested)
PERTURB_SEED = 3
N_LABELS = 6
SPREAD = 0.05


if "/tmp/golden_deps" not in sys.path:
    sys.path.append("/tmp/golden_deps")


def _import_official():
    """``nvlabs_gv.group_vit`` with a no-op ``builder`` and (if timm is absent) a minimal ``timm.models.layers``."""
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        layers = types.ModuleType("timm.models.layers")
        layers.DropPath = lambda p: nn.Identity()  # only built for drop_path > 0; eval runs never drop
        layers.to_2tuple = lambda x: tuple(x) if isinstance(x, list | tuple) else (x, x)
        layers.trunc_normal_ = lambda t, std=1.0: nn.init.trunc_normal_(t, std=std)
        for name in ("timm", "timm.models"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["timm.models.layers"] = layers
    official.load_package("nvlabs_gv", REPO, "models", ["group_vit.py", "misc.py"])
    (official._TMP / "nvlabs_gv" / "builder.py").write_text(
        "class _R:\n    def register_module(self):\n        return lambda c: c\nMODELS = _R()\n")
    import nvlabs_gv.group_vit

    return nvlabs_gv.group_vit


def build(gen: torch.Generator):
    """The NVlabs encoder and projector, every parameter perturbed, BatchNorm statistics random."""
    from einops import rearrange

    gv = _import_official()
    torch.manual_seed(SEED)
    enc = gv.GroupViT(**ENC).eval()
    ns = {"nn": nn, "torch": torch, "F": F, "rearrange": rearrange}
    project_mlp = official.function_from(REPO, "models/multi_label_contrastive.py", "ProjectMLP", ns)
    proj = project_mlp(**PROJ).eval()
    with torch.no_grad():
        for module in (enc, proj):
            for p in module.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
        for m in proj.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
    return gv, enc, proj


class _Contrastive:
    """The attributes ``MultiLabelContrastive.encode_image`` and the segmentor read."""

    def __init__(self, enc, proj, encode_image):
        self.img_encoder, self.img_projector = enc, proj
        self.logit_scale = torch.tensor(LOGIT_SCALE)
        self.encode_image = types.MethodType(encode_image, self)


def official_segment(gv, enc, proj, img: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``GroupViTSegInference.encode_decode`` (with_bg, bg_thresh 0.95) on one image: ``[1, 1+N, H, W]``."""
    from einops import rearrange

    seg = "segmentation/evaluation/group_vit_seg.py"
    ns = {"torch": torch, "F": F, "np": np, "rearrange": rearrange, "Result": gv.Result}
    ns["resize_attn_map"] = official.function_from(REPO, seg, "resize_attn_map", ns)
    encode_image = official.function_from(REPO, "models/multi_label_contrastive.py",
                                          "MultiLabelContrastive.encode_image", ns)
    get_attn_maps = official.function_from(REPO, seg, "GroupViTSegInference.get_attn_maps", ns)
    encode_decode = official.function_from(REPO, seg, "GroupViTSegInference.encode_decode", ns)
    segmentor = types.SimpleNamespace(model=_Contrastive(enc, proj, encode_image), text_embedding=text,
                                      with_bg=True, bg_thresh=0.95, align_corners=False)
    segmentor.get_attn_maps = types.MethodType(get_attn_maps, segmentor)
    return encode_decode(segmentor, img, None)


def label_embeddings(groups: torch.Tensor, gen: torch.Generator, spread: float = SPREAD) -> torch.Tensor:
    """``[N_LABELS, D]`` unit "text" embeddings close to the image's groups: ``base + spread·(ĝ_j − base)`` for
    its first groups and ``base + spread·r`` (random ``r``) for the rest, ``base`` the mean unit group. Close
    together, so that at the clamped scale of 100 the scores are soft and different groups win different labels:
    the top-k mask, the product of softmaxes and the background cut all change the output."""
    g = F.normalize(groups, dim=-1)
    base = g.mean(dim=0)
    k = min(len(g), N_LABELS - 2)
    near = base + spread * (g[:k] - base)
    rest = base + spread * F.normalize(torch.randn(N_LABELS - k, g.shape[-1], generator=gen), dim=-1)
    return F.normalize(torch.cat([near, rest]), dim=-1)


def make(out_dir: Path) -> dict:
    """Write ``groupvit_nvlabs.safetensors`` and ``groupvit_nvlabs.npz``; return a sources record."""
    from safetensors.torch import save_file

    from clipkit.groupvit.config import GroupViTConfig
    from clipkit.groupvit.model import GroupViT
    from clipkit.groupvit.segment import segment
    from clipkit.groupvit.weights import nvlabs_to_ours

    gen = torch.Generator().manual_seed(PERTURB_SEED)
    gv, enc, proj = build(gen)
    sd = {f"img_encoder.{k}": v for k, v in enc.state_dict().items()}
    sd |= {f"img_projector.{k}": v for k, v in proj.state_dict().items()}
    sd["logit_scale"] = torch.tensor(LOGIT_SCALE)
    sd = {k: v.detach().clone().contiguous() for k, v in sd.items()}
    inputs = {"square": torch.randn(2, 3, 32, 32, generator=gen), "rect": torch.randn(2, 3, 24, 40, generator=gen)}
    cfg = {"vision": {"image_size": 32, "patch_size": 4, "width": 32, "depths": [2, 1, 1], "num_heads": [2, 2, 2],
                      "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4], "drop_path_rate": 0.0},
           "text": {"width": 32, "layers": 1, "heads": 2, "context_length": 8},
           "projection_dim": 24, "projection_inner_dim": 48}
    ours = GroupViT(GroupViTConfig.from_dict(cfg))
    missing, unexpected = ours.load_state_dict(nvlabs_to_ours(sd), strict=False)
    assert not unexpected and all(k.startswith("text_") or k == "multi_label_logit_scale" or
                                  k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    ours.eval()
    arrays: dict[str, np.ndarray] = {"config": np.array(json.dumps(cfg)), "nvlabs_kwargs": np.array(json.dumps(ENC))}
    report = {}
    with torch.no_grad():
        for name, x in inputs.items():
            feat, _, attn_dicts = enc.forward_features(x, return_attn=True)
            mine = ours.img_encoder(x)
            arrays[f"pixels_{name}"] = x.numpy()
            arrays[f"tokens_{name}"] = feat.numpy()
            report[f"tokens_{name}"] = float((mine.tokens - feat).abs().max())
            for i, d in enumerate(a for a in attn_dicts if a is not None):
                arrays[f"soft{i}_{name}"] = d["soft"][:, 0].numpy()  # one assignment head: [B, S, N]
                report[f"soft{i}_{name}"] = float((mine.soft[i] - d["soft"][:, 0]).abs().max())
            image_x = proj(enc(x))  # the official encode_image's pooled feature, projected
            arrays[f"image_x_{name}"] = image_x.numpy()
            report[f"image_x_{name}"] = float((ours.encode_image(x) - image_x).abs().max())
            for b in range(x.shape[0]):  # the official segmentor takes one image at a time
                text = label_embeddings(proj(feat[b : b + 1])[0], gen)
                arrays[f"text_{name}{b}"] = text.numpy()
                logits = official_segment(gv, enc, proj, x[b : b + 1], text)[0]  # [1+N, H, W]
                arrays[f"seg_logits_{name}{b}"] = logits.numpy()
                res = segment(ours, x[b : b + 1], text, tuple(x.shape[-2:]))
                report[f"seg_scores_{name}{b}"] = float((torch.from_numpy(res.scores) - logits[1:]).abs().max())
                report[f"seg_labels_equal_{name}{b}"] = float((torch.from_numpy(res.label_map.astype(np.int64))
                                                               == logits.argmax(0)).float().mean())
    save_file(sd, str(out_dir / "groupvit_nvlabs.safetensors"))
    np.savez_compressed(out_dir / "groupvit_nvlabs.npz", **arrays)
    return {"repo": REPO, "commit": official.head(REPO), "seed": SEED, "perturb_seed": PERTURB_SEED,
            "encoder": ENC, "projector": PROJ,
            "logit_scale": LOGIT_SCALE, "max_abs_diff_clipkit": report}
