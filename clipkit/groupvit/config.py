"""GroupViT configuration: the official defaults, and conversion to/from the Hugging Face port's config.json.

Defaults follow NVlabs/GroupViT ``configs/group_vit_gcc_yfcc_30e.yml`` + ``models/group_vit.py``:
image 224, patch 16, width 384, depths [6, 3, 3], 6 heads, group tokens [64, 8, 0], output groups [64, 8],
hard Gumbel assignment, text transformer width 256 x 12 layers (heads = width // 64), projection MLP
(2 layers, inner 4096) to 256-d, contrast temperature 0.07, multi-label 3 noun prompts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# The official training transform normalises with timm's IMAGENET_DEFAULT_MEAN/STD (datasets/builder.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEXT_ACTS = ("quick_gelu", "gelu")


@dataclass
class VisionConfig:
    """Image encoder (``GroupViT`` in models/group_vit.py). All stages share one width (embed_factors 1)."""

    image_size: int = 224
    patch_size: int = 16
    width: int = 384
    depths: tuple[int, ...] = (6, 3, 3)
    num_heads: tuple[int, ...] = (6, 6, 6)
    num_group_tokens: tuple[int, ...] = (64, 8, 0)
    num_output_groups: tuple[int, ...] = (64, 8)
    mlp_ratio: float = 4.0
    assign_mlp_ratio: tuple[float, float] = (0.5, 4.0)
    assign_eps: float = 1.0
    hard_assignment: bool = True  # hard + gumbel in the official GroupingBlock
    gumbel_tau: float = 1.0
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        self.depths = tuple(int(d) for d in self.depths)
        heads = self.num_heads if isinstance(self.num_heads, list | tuple) else [self.num_heads] * len(self.depths)
        self.num_heads = tuple(int(h) for h in heads)
        self.num_group_tokens = tuple(int(g) for g in self.num_group_tokens)
        self.num_output_groups = tuple(int(g) for g in self.num_output_groups)
        self.assign_mlp_ratio = tuple(float(r) for r in self.assign_mlp_ratio)
        n = len(self.depths)
        if not (len(self.num_heads) == len(self.num_group_tokens) == n):
            raise ValueError("depths, num_heads and num_group_tokens need one entry per stage")
        if len(self.num_output_groups) != n - 1:
            raise ValueError("num_output_groups needs one entry per grouping block (stages - 1)")
        if self.num_group_tokens[-1] != 0:
            raise ValueError("the last stage has no group tokens (num_group_tokens[-1] must be 0)")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")

    @property
    def grid(self) -> int:
        """Patches per side at the training resolution."""
        return self.image_size // self.patch_size


@dataclass
class TextConfig:
    """CLIP-style causal text transformer (models/transformer.py ``TextTransformer``); EOT pooling.

    ``mlp_ratio`` (official ``TextTransformer(mlp_ratio=4)``) and ``hidden_act`` (official: QuickGELU; the port's
    ``hidden_act``) are configurable so that an open_clip text tower (exact GELU unless ``quick_gelu``) can be
    copied into ours exactly (:mod:`clipkit.training.groupvit_clip_init`).
    """

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 256
    layers: int = 12
    heads: int = 4
    layer_norm_eps: float = 1e-5
    mlp_ratio: float = 4.0
    hidden_act: str = "quick_gelu"  # or "gelu" (exact, erf)

    def __post_init__(self) -> None:
        if self.hidden_act not in TEXT_ACTS:
            raise ValueError(f"text hidden_act must be one of {TEXT_ACTS}, not {self.hidden_act!r}")
        if self.mlp_ratio * self.width != int(self.mlp_ratio * self.width):
            raise ValueError("text mlp_ratio * width must be an integer")

    @property
    def mlp_width(self) -> int:
        return int(self.mlp_ratio * self.width)


@dataclass
class GroupViTConfig:
    """Whole model (``MultiLabelContrastive`` in models/multi_label_contrastive.py)."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    projection_dim: int = 256
    projection_inner_dim: int = 4096
    proj_num_layers: int = 2
    contrast_temperature: float = 0.07
    multi_label: int = 3
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (our own layout; see :func:`to_hf_config` for the port's)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupViTConfig:
        d = dict(d)
        vision = VisionConfig(**d.pop("vision", {}))
        text = TextConfig(**d.pop("text", {}))
        for key in ("image_mean", "image_std"):
            if key in d:
                d[key] = tuple(float(v) for v in d[key])
        return cls(vision=vision, text=text, **d)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face port (transformers.GroupViTConfig) <-> ours. Facts from configuration_groupvit.py: the vision
# config has one num_attention_heads for all stages, num_output_groups has one entry per stage (the last repeats),
# the text config calls the context length max_position_embeddings.


def from_hf_config(hf: dict[str, Any], preprocessor: dict[str, Any] | None = None) -> GroupViTConfig:
    """Build our config from the port's ``config.json`` (and optional ``preprocessor_config.json``)."""
    v = hf.get("vision_config") or {}
    t = hf.get("text_config") or {}
    depths = tuple(v.get("depths", (6, 3, 3)))
    heads = v.get("num_attention_heads", 6)
    out_groups = tuple(v.get("num_output_groups", (64, 8, 8)))[: len(depths) - 1]
    act_v, act_t = v.get("hidden_act", "gelu"), t.get("hidden_act", "quick_gelu")
    if act_v != "gelu" or act_t not in TEXT_ACTS:
        raise ValueError(f"unsupported activations vision={act_v!r} text={act_t!r} (need gelu / {TEXT_ACTS})")
    width = int(v.get("hidden_size", 384))
    inter = int(v.get("intermediate_size", 4 * width))
    image_size = v.get("image_size", 224)
    patch_size = v.get("patch_size", 16)
    vision = VisionConfig(
        image_size=int(image_size[0] if isinstance(image_size, list | tuple) else image_size),
        patch_size=int(patch_size[0] if isinstance(patch_size, list | tuple) else patch_size),
        width=width,
        depths=depths,
        num_heads=heads,
        num_group_tokens=tuple(v.get("num_group_tokens", (64, 8, 0))),
        num_output_groups=out_groups,
        mlp_ratio=inter / width,
        assign_mlp_ratio=tuple(v.get("assign_mlp_ratio", (0.5, 4))),
        assign_eps=float(v.get("assign_eps", 1.0)),
        layer_norm_eps=float(v.get("layer_norm_eps", 1e-5)),
        drop_path_rate=0.0,
    )
    t_width = int(t.get("hidden_size", 256))
    text = TextConfig(
        context_length=int(t.get("max_position_embeddings", 77)),
        vocab_size=int(t.get("vocab_size", 49408)),
        width=t_width,
        layers=int(t.get("num_hidden_layers", 12)),
        heads=int(t.get("num_attention_heads", 4)),
        layer_norm_eps=float(t.get("layer_norm_eps", 1e-5)),
        mlp_ratio=int(t.get("intermediate_size", 4 * t_width)) / t_width,
        hidden_act=act_t,
    )
    cfg = GroupViTConfig(
        vision=vision,
        text=text,
        projection_dim=int(hf.get("projection_dim", 256)),
        projection_inner_dim=int(hf.get("projection_intermediate_dim", 4096)),
        multi_label=0,
    )
    if preprocessor:
        cfg.image_mean = tuple(float(x) for x in preprocessor.get("image_mean", cfg.image_mean))
        cfg.image_std = tuple(float(x) for x in preprocessor.get("image_std", cfg.image_std))
    return cfg


def to_hf_config(cfg: GroupViTConfig) -> dict[str, Any]:
    """The port's ``config.json`` for ``cfg`` (so our bundled model also opens in transformers)."""
    v, t = cfg.vision, cfg.text
    if len(set(v.num_heads)) != 1:
        raise ValueError("the Hugging Face layout needs the same number of heads in every stage")
    if v.mlp_ratio * v.width != int(v.mlp_ratio * v.width):
        raise ValueError("mlp_ratio * width must be an integer")
    return {
        "model_type": "groupvit",
        "architectures": ["GroupViTModel"],
        "projection_dim": cfg.projection_dim,
        "projection_intermediate_dim": cfg.projection_inner_dim,
        "logit_scale_init_value": 2.6592,
        "vision_config": {
            "model_type": "groupvit_vision_model",
            "hidden_size": v.width,
            "intermediate_size": int(v.mlp_ratio * v.width),
            "num_hidden_layers": sum(v.depths),
            "depths": list(v.depths),
            "num_group_tokens": list(v.num_group_tokens),
            # the port repeats the last output-group count for the final stage
            "num_output_groups": [*v.num_output_groups, v.num_output_groups[-1]],
            "num_attention_heads": v.num_heads[0],
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": 3,
            "hidden_act": "gelu",
            "layer_norm_eps": v.layer_norm_eps,
            "assign_eps": v.assign_eps,
            "assign_mlp_ratio": list(v.assign_mlp_ratio),
        },
        "text_config": {
            "model_type": "groupvit_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": t.mlp_width,
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": t.hidden_act,
            "layer_norm_eps": t.layer_norm_eps,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
    }


def to_hf_preprocessor(cfg: GroupViTConfig) -> dict[str, Any]:
    """A ``preprocessor_config.json`` with our resolution and normalisation."""
    size = cfg.vision.image_size
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_normalize": True,
        "image_mean": list(cfg.image_mean),
        "image_std": list(cfg.image_std),
    }
