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

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipkit.errors import ModelError, UsageError
from clipkit.groupvit import fallback as fb
from clipkit.groupvit.model import GroupViT
from clipkit.groupvit.segment import OFFICIAL_BG_THRESH, OFFICIAL_TOPK, label_groups, preprocess, segment
from clipkit.groupvit.slide import segment_slide
from clipkit.groupvit.text import label_embeddings
from clipkit.images import Batch, as_pil, expand_inputs
from clipkit.prompts import parse_labels, resolve_templates, text_embeddings
from clipkit.registry import LoadedModel, bundled_models, load_model
from clipkit.results import ErrorRecord, Result, Segmentation
from clipkit.runner import run_over_images

DEFAULT_MODEL = "shapes-groupvit"
OFFICIAL_TEMPLATES = ("a photo of a {}.",)  # the official evaluation's "simple" template set
_CACHE: dict[tuple, GroupViTModel] = {}


@dataclass
class GroupViTModel:
    """A loaded GroupViT: the network plus what inference needs (``meta`` from the folder's clipkit.json)."""

    net: GroupViT
    name: str
    device: torch.device
    path: Path | None = None
    meta: dict = field(default_factory=dict)


def groupvit_source(model: str | None, pretrained: str | None = None) -> Path | None:
    """The folder/file of a GroupViT spec, or None when ``model`` names something else (an open_clip model)."""
    from clipkit.groupvit.weights import is_hf_groupvit_dir

    spec = model or DEFAULT_MODEL
    if pretrained is not None:
        return None
    bundled = bundled_models()
    if spec in bundled:
        meta = bundled[spec] / "clipkit.json"
        kind = json.loads(meta.read_text()).get("kind") if meta.is_file() else "clip"
        return bundled[spec] if kind == "groupvit" else None
    path = Path(spec).expanduser()
    if path.is_dir() and is_hf_groupvit_dir(path):
        return path.resolve()
    if path.is_file() and path.suffix in (".pth", ".pt"):
        return path.resolve()
    return None


def load_group_model(model: str | None = None, pretrained: str | None = None, *, device: str | None = None,
                     precision: str | None = None, offline: bool | None = None,
                     trust_checkpoint: bool = False) -> GroupViTModel | LoadedModel:
    """A GroupViT for GroupViT specs (default ``shapes-groupvit``), else ``registry.load_model`` (fallback path)."""
    from clipkit.device import resolve_device

    source = groupvit_source(model, pretrained)
    if source is None:
        if model is None:
            raise ModelError(f"the bundled model {DEFAULT_MODEL!r} is missing from this install: reinstall clipkit")
        return load_model(model, pretrained, device=device, precision=precision, offline=offline,
                          trust_checkpoint=trust_checkpoint)
    if precision not in (None, "fp32"):
        raise UsageError("GroupViT runs in fp32 (its hard assignment is an argmax over close scores)")
    dev = resolve_device(device)
    key = (str(source), str(dev))
    if key in _CACHE:
        return _CACHE[key]
    from clipkit.groupvit.weights import load_groupvit

    try:
        net = load_groupvit(source)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        raise ModelError(f"could not load GroupViT weights from {source}: {str(exc).splitlines()[0][:300]}") from exc
    meta_path = (source if source.is_dir() else source.parent) / "clipkit.json"
    meta = json.loads(meta_path.read_text()) if source.is_dir() and meta_path.is_file() else {}
    loaded = GroupViTModel(net.to(dev).eval().requires_grad_(False), model or DEFAULT_MODEL, dev, source, meta)
    _CACHE[key] = loaded
    return loaded


def _check(bg_thresh: float | None, topk: int, groups: Sequence[int]) -> None:
    if bg_thresh is not None and not 0.0 <= bg_thresh <= 1.0:
        raise UsageError("--bg-thresh must lie in [0, 1] (or 'none' for no background)")
    if topk < 1:
        raise UsageError("--top-k must be at least 1")
    if len(groups) != 2 or min(groups) < 1 or groups[1] > groups[0]:
        raise UsageError("--groups needs two counts, the second no larger than the first (e.g. 64,8)")


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


class Grouper:
    """Callable ``(PIL image, path) -> Segmentation`` for one label set.

    bg_thresh: background threshold of the official rule (default: the model's calibrated value from its
    clipkit.json, else the official 0.95); ``None`` = no background. topk: image-level class filter (default:
    the model's calibrated value, else the official 5). short_side: GroupViT input short side (default: its
    training size). ``window`` (and ``stride``, default ``window // 2``): GroupViT only, the official evaluation's
    sliding-window mode (:mod:`clipkit.groupvit.slide`; off by default). Fallback only: ``variant`` of the dense
    embeddings (default ``clipkit.dense.default_variant``: the stock tokens of average-pooled towers such as
    shapes-clip, NACLIP otherwise), ``groups`` (64, 8), ``iters``, ``tau``.
    """

    def __init__(self, model: GroupViTModel | LoadedModel, labels: Sequence[str], *,
                 templates: str | Sequence[str] | None = None, bg_thresh: float | str | None = "default",
                 topk: int | None = None, short_side: int | None = None, window: int | None = None,
                 stride: int | None = None, variant: str | None = None,
                 groups: Sequence[int] = fb.DEFAULT_GROUPS, iters: int = fb.DEFAULT_ITERS,
                 tau: float = fb.DEFAULT_TAU) -> None:
        self.model, self.labels = model, list(labels)
        self.is_groupvit = isinstance(model, GroupViTModel)
        self.bg_thresh = resolve_bg_thresh(bg_thresh, model)
        self.topk = topk if topk is not None else int(getattr(model, "meta", {}).get("top_k", OFFICIAL_TOPK))
        self.short_side = short_side
        self.window, self.stride = window, stride or (window // 2 if window else None)
        if window is not None:
            _check_window(model, window, self.stride)
        if not self.is_groupvit:  # the dense variant only matters for the fallback
            from clipkit.dense import default_variant

            self.variant = variant or default_variant(model)
        self.groups, self.iters, self.tau = tuple(int(g) for g in groups), iters, tau
        _check(self.bg_thresh, self.topk, self.groups)
        if self.is_groupvit:
            if templates is None:
                templates = model.meta.get("templates") or list(OFFICIAL_TEMPLATES)
            self.templates = resolve_templates(templates)
            self.text = label_embeddings(model.net, self.labels, self.templates).to(model.device)
        else:
            self.templates = resolve_templates(templates, model)
            self.text = text_embeddings(model, self.labels, self.templates)

    @torch.inference_mode()
    def __call__(self, image: Image.Image, path: str = "") -> Segmentation:
        size = (image.height, image.width)
        if self.is_groupvit:
            net = self.model.net
            pixels = preprocess(image, net, self.short_side).to(self.model.device)
            if self.window:
                seg = segment_slide(net, pixels, self.text, size, window=self.window, stride=self.stride,
                                    bg_thresh=self.bg_thresh, topk=self.topk)
            else:
                seg = segment(net, pixels, self.text, size, bg_thresh=self.bg_thresh, topk=self.topk)
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
                               bg_thresh=self.bg_thresh, topk=self.topk)
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
    groups = []
    for g in np.unique(final):
        k = int(seg.group_label[g])
        groups.append({"group": int(g), "label": labels[k - 1] if k else None,
                       "score": round(float(seg.group_score[g]), 4),
                       "fraction": round(float((final == g).sum() / total), 4)})
    extras: dict[str, Any] = {f"stage{i + 1}": m for i, m in enumerate(seg.group_maps)}
    extras["method"] = method
    extras["stages"] = [len(np.unique(m)) for m in seg.group_maps]
    extras["groups"] = sorted(groups, key=lambda d: -d["fraction"])
    return Segmentation(path, labels, seg.label_map, seg.scores, extras)


def group_overlay(image: Image.Image, group_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image blended with one palette colour per group (the official ``all_groups`` visualisation)."""
    from clipkit.writers import palette

    colours = palette(int(group_map.max()) + 1)[1:]
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = base * (1 - alpha) + colours[group_map].astype(np.float32) * alpha
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


class _Artefacts:
    """Writes ``DIR/<stem>.png`` (labels), ``<stem>_overlay.png``, ``<stem>_stage1.png``, ``<stem>_stage2.png``."""

    def __init__(self, out_dir: str | Path | None, *, overlay: bool = True) -> None:
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.overlay = overlay
        self.used: set[str] = set()

    def _stem(self, path: str) -> str:
        base = Path(path).stem or "image"
        stem, i = base, 1
        while stem in self.used:  # a/x.png and b/x.png must not overwrite each other
            stem, i = f"{base}-{i}", i + 1
        self.used.add(stem)
        return stem

    def write(self, result: Segmentation, image: Image.Image) -> None:
        from clipkit.writers import save_image, save_label_png, save_overlay_png

        if self.out_dir is None:
            return
        stem = self._stem(result.path)
        save_label_png(self.out_dir / f"{stem}.png", result.label_map, len(result.labels))
        if self.overlay:
            save_overlay_png(self.out_dir / f"{stem}_overlay.png", image, result.label_map, result.labels)
        for key in ("stage1", "stage2"):
            if key in result.extras:
                save_image(self.out_dir / f"{stem}_{key}.png", group_overlay(image, result.extras[key]))


def iter_group(paths: Sequence[str], labels: Sequence[str], model: GroupViTModel | LoadedModel, *,
               out_dir: str | Path | None = None, overlay: bool = True, workers: int | None = None,
               quiet: bool = True, skip: set[str] | None = None, **options: Any) -> Iterator[Result]:
    """Group image files in order, yielding a ``Segmentation`` or an ``ErrorRecord`` per input.

    ``options`` go to :class:`Grouper`; with ``out_dir`` the label PNG, overlay and stage maps are written.
    """
    grouper = Grouper(model, labels, **options)
    artefacts = _Artefacts(out_dir, overlay=overlay)

    def process(batch: Batch) -> list[Result]:
        out: list[Result] = []
        for item in batch.ok:
            try:
                result = grouper(item.image, item.path)
                artefacts.write(result, item.image)
            except (UsageError, OSError) as exc:
                out.append(ErrorRecord(item.path, str(exc)))
                continue
            out.append(result)
        return out

    yield from run_over_images(paths, process, transform=None, batch_size=1, workers=workers, keep_image=True,
                               quiet=quiet, skip=skip, description="group")


def group(images: Any, labels: str | Sequence[str], *, model: str | GroupViTModel | LoadedModel | None = None,
          pretrained: str | None = None, device: str | None = None, out_dir: str | Path | None = None,
          **options: Any) -> list[Result]:
    """Group ``images`` and label the groups with ``labels``; the Python face of ``clipkit group``.

    ``images``: a path, folder or glob, a PIL image or HWC uint8 array, or a list of these. Returns one
    ``Segmentation`` (0 = background, per-stage group maps in ``extras``) or ``ErrorRecord`` per image.
    """
    loaded = model if isinstance(model, GroupViTModel | LoadedModel) else load_group_model(
        model, pretrained, device=device)
    label_list = parse_labels(labels)
    items = images if isinstance(images, list | tuple) else [images]
    if all(isinstance(i, str) or hasattr(i, "__fspath__") for i in items):
        return list(iter_group(expand_inputs([str(i) for i in items]), label_list, loaded, out_dir=out_dir,
                               **options))
    overlay = options.pop("overlay", True)
    grouper = Grouper(loaded, label_list, **options)
    artefacts = _Artefacts(out_dir, overlay=overlay)
    results: list[Result] = []
    for index, item in enumerate(items):
        name = f"<image {index}>"
        try:
            image = as_pil(item)
            result = grouper(image, name)
            artefacts.write(result, image)
        except Exception as exc:  # one bad in-memory image must not lose the others
            results.append(ErrorRecord(name, str(exc)))
            continue
        results.append(result)
    return results
