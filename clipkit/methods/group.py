"""``clipkit group``: GroupViT zero-shot segmentation with per-stage group maps (Xu et al., CVPR 2022).

Two paths, one result type (:class:`clipkit.results.Segmentation`, per-stage group maps in
``extras["stage1"]``/``extras["stage2"]``):

* a GroupViT (bundled ``shapes-groupvit``, a Hugging Face port folder such as ``nvidia/groupvit-gcc-yfcc``, or an
  NVlabs ``.pth``): the model's own grouping, labelled as the official evaluation does
  (:mod:`clipkit.groupvit.segment`);
* any other open_clip model: training-free two-stage grouping of its dense patch embeddings
  (:mod:`clipkit.groupvit.fallback`, a deviation), labelled by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipkit.configs import GroupConfig
from clipkit.errors import UsageError
from clipkit.groupvit import fallback as fb
from clipkit.groupvit.segment import (
    OFFICIAL_BG_THRESH,
    OFFICIAL_TOPK,
    Pixels,
    label_groups,
    preprocess,
    segment_batch,
)
from clipkit.groupvit.slide import segment_slide
from clipkit.groupvit.text import label_embeddings
from clipkit.methods import Sample
from clipkit.prompts import cached_embeddings, resolve_templates, text_embeddings
from clipkit.registry import GroupViTModel, LoadedModel
from clipkit.results import Segmentation

__all__ = ["GroupConfig", "GroupPredictor", "resolve_bg_thresh"]

OFFICIAL_TEMPLATES = ("a photo of a {}.",)  # the official evaluation's "simple" template set


def _check_window(model: GroupViTModel | LoadedModel, window: int, stride: int | None) -> None:
    if not isinstance(model, GroupViTModel):
        raise UsageError("--window (sliding-window inference) needs a GroupViT model")
    p = model.net.cfg.vision.patch_size
    if window < p or window % p or not stride or stride % p:
        raise UsageError(f"--window and --stride must be positive multiples of the patch size {p}")


def resolve_bg_thresh(value: float | str | None, model: GroupViTModel | LoadedModel) -> float | None:
    """``"default"`` -> the model's calibrated threshold (else the official 0.95); ``"none"`` or None -> no
    background; a number or numeric string -> float. Anything else is a ``UsageError``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "default":
            return model.meta.get("bg_thresh", OFFICIAL_BG_THRESH)
        if text == "none":
            return None
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"--bg-thresh must be a number in [0, 1] or 'none', not {value!r}") from None
    return value


class GroupPredictor:
    """One label set → ``predict(samples)``: a :class:`Segmentation` per RGB image, with the per-stage group
    maps in ``extras["stage1"]``/``extras["stage2"]``.

    Config (:class:`GroupConfig`): ``bg_thresh`` — background threshold of the official rule ("default": the
    model's calibrated value from its clipkit.json, else the official 0.95; "none": no background); ``top_k`` —
    image-level class filter (default: the model's calibrated value, else the official 5); ``short_side`` —
    GroupViT input short side (default: its training size); ``window``/``stride`` — GroupViT only, the official
    evaluation's sliding-window mode (:mod:`clipkit.groupvit.slide`, off by default). Fallback (open_clip models)
    only: ``variant`` of the dense embeddings (default ``clipkit.dense.default_variant``), ``groups``, ``iters``,
    ``tau``; giving them with a GroupViT is a usage error.
    """

    keep_image = True
    transform = None

    def __init__(self, model: GroupViTModel | LoadedModel, labels: Sequence[str], config: GroupConfig | None = None,
                 **options: Any) -> None:
        self.config = cfg = GroupConfig.of(config, **options)
        self.model, self.labels = model, list(labels)
        self.is_groupvit = isinstance(model, GroupViTModel)
        self.bg_thresh = resolve_bg_thresh(cfg.bg_thresh, model)
        meta = getattr(model, "meta", {}) or {}
        self.topk = cfg.top_k if cfg.top_k is not None else int(meta.get("top_k", OFFICIAL_TOPK))
        self.short_side = cfg.short_side
        self.window, self.stride = cfg.window, cfg.stride or (cfg.window // 2 if cfg.window else None)
        self.groups, self.iters, self.tau = cfg.groups, cfg.iters, cfg.tau
        if self.is_groupvit:
            defaults = GroupConfig()
            clash = [n for n in ("variant", "groups", "iters", "tau") if getattr(cfg, n) != getattr(defaults, n)]
            if clash:
                names = ", ".join("--" + n for n in clash)
                raise UsageError(f"{names} applies only to the training-free fallback (open_clip models), not to "
                                 "a GroupViT")
            if cfg.window is not None:
                _check_window(model, cfg.window, self.stride)
            templates = cfg.templates if cfg.templates is not None else (
                meta.get("templates") or list(OFFICIAL_TEMPLATES))
            self.templates = resolve_templates(templates)
            self.text = cached_embeddings(model.identity, "fp32", self.templates, self.labels,
                                          lambda missing: label_embeddings(model.net, missing, self.templates)
                                          ).to(model.device)
            if cfg.window is None:  # whole images: the decoding workers resize and normalise them
                self.transform = Pixels(model.net.cfg, self.short_side)
        else:
            if cfg.window is not None:
                raise UsageError("--window (sliding-window inference) needs a GroupViT model")
            from clipkit.dense import default_variant

            self.variant = cfg.variant or default_variant(model)
            self.templates = resolve_templates(cfg.templates, model)
            self.text = text_embeddings(model, self.labels, self.templates)

    @torch.inference_mode()
    def predict(self, samples: list[Sample]) -> list[Segmentation]:
        if not self.is_groupvit or self.window:
            return [self.group_image(s.image, s.key) for s in samples]
        # whole images through a GroupViT: same-shape inputs share the encoder's batches
        net = self.model.net
        pixels = [(s.pixels if s.pixels is not None else self.transform(s.image))[None].to(self.model.device)
                  for s in samples]
        segs = segment_batch(net, pixels, self.text, [(s.image.height, s.image.width) for s in samples],
                             bg_thresh=self.bg_thresh, topk=self.topk, keep_scores=self.config.scores)
        return [_result(s.key, self.labels, seg, "groupvit") for s, seg in zip(samples, segs, strict=True)]

    @torch.inference_mode()
    def group_image(self, image: Image.Image, path: str = "") -> Segmentation:
        """One RGB image → its :class:`Segmentation` named ``path``."""
        size = (image.height, image.width)
        if self.is_groupvit and not self.window:
            return self.predict([Sample(path, image=image)])[0]  # the batched path, a batch of one
        if self.is_groupvit:
            net = self.model.net
            seg = segment_slide(net, preprocess(image, net, self.short_side).to(self.model.device), self.text, size,
                                window=self.window, stride=self.stride, bg_thresh=self.bg_thresh, topk=self.topk)
            method = "groupvit"
        else:
            from clipkit.dense import patch_embeddings

            pixels = _fallback_pixels(self.model, image, self.short_side)
            patches = patch_embeddings(self.model, pixels, self.variant)[0]
            soft, group_emb = fb.group_patches(patches, self.groups, iters=self.iters, tau=self.tau)
            maps = fb.stage_maps_from(soft, patches.shape[:2], size)
            # the image-level top-k filter uses the ordinary global embedding (model's own eval transform)
            image_emb = self.model.encode_image(self.model.preprocess(image).unsqueeze(0))[0]
            seg = label_groups(maps, group_emb, image_emb, self.text, self.model.logit_scale,
                               bg_thresh=self.bg_thresh, topk=self.topk, keep_scores=self.config.scores)
            method = f"dense-grouping ({self.variant})"
        return _result(path, self.labels, seg, method)


def _fallback_pixels(model: LoadedModel, image: Image.Image, short_side: int | None) -> torch.Tensor:
    """``[1, 3, H', W']`` for the dense tower: short side ``short_side`` (default: the model's input size), both
    sides rounded to multiples of the patch size, the model's mean/std."""
    from clipkit.dense import image_tensor, patch_grid

    ph, pw = patch_grid(model)
    s = short_side or min(model.image_size)
    w, h = image.size
    r = s / min(w, h)
    size = (max(pw, round(w * r / pw) * pw), max(ph, round(h * r / ph) * ph))
    return image_tensor(model, image.convert("RGB").resize(size, Image.Resampling.BICUBIC))


def _result(path: str, labels: list[str], seg: Any, method: str) -> Segmentation:
    final = seg.group_maps[-1]
    total = final.size
    # pixels per group (a sort-free unique of 10^5-10^7 pixels; torch's count takes int32 as it is, numpy's casts)
    counts = [torch.bincount(torch.from_numpy(m.ravel())).numpy() for m in seg.group_maps]
    pixels = counts[-1]
    groups = []
    for g in np.flatnonzero(pixels):
        k = int(seg.group_label[g])
        groups.append({"group": int(g), "label": labels[k - 1] if k else None,
                       "score": round(float(seg.group_score[g]), 4),
                       "fraction": round(float(pixels[g] / total), 4)})
    extras: dict[str, Any] = {f"stage{i + 1}": m for i, m in enumerate(seg.group_maps)}
    extras["method"] = method
    extras["stages"] = [int(np.count_nonzero(c)) for c in counts]
    extras["groups"] = sorted(groups, key=lambda d: -d["fraction"])
    return Segmentation(path, labels, seg.label_map, seg.scores, extras, mean_scores=seg.mean_scores)
