"""CLIPasso's loss: geometric (intermediate activations) + semantic (final embedding), under augmentation.

As in the official code (yael-vinker/CLIPasso, ``models/loss.py``, ``CLIPConvLoss``, defaults from
``config.py``):

* views: the clean sketch/target (resized to CLIP's input, normalised) plus ``num_aug_clip = 4``
  augmented pairs, each made by ``RandomPerspective(distortion_scale=0.5, p=1, fill=0)`` then
  ``RandomResizedCrop(224, scale=(0.8, 0.8), ratio=(1, 1))`` applied to ``cat([sketch, target])`` — the SAME
  parameters for sketch and target — then CLIP normalisation;
* geometric loss: ``clip_conv_loss_type = "L2"``, the mean squared difference of intermediate activations with
  ``clip_conv_layer_weights = 0,0,1,1,0`` over ``[stem, layer1, layer2, layer3, layer4]`` of a ResNet
  CLIP (i.e. layer2 + layer3). For a ViT the official code hooks the outputs of the transformer blocks and
  zips the same five weights with them, i.e. blocks 2 and 3 (all tokens, class token included);
* semantic loss: ``clip_fc_loss_weight = 0.1`` × mean(1 − cos) of the final image embeddings;
* evaluation (``mode="eval"``): the same on the clean view only.

Differences from the official code, none of which changes the value of the loss:
the target's activations are computed without autograd (the official code builds, and discards, a graph
for them), CLIP's weights are frozen, and augmentation parameters come from a seeded ``torch.Generator`` (the
official code draws them from the global RNG) so runs are deterministic per seed. Models whose input is not
224 px get their crops resized to their own input size. A ViT shallower than 4 blocks uses its deepest
blocks with index ≤ 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from open_clip.modified_resnet import ModifiedResNet
from torchvision.transforms import InterpolationMode

from clipkit.errors import UsageError

CONV_LAYER_WEIGHTS = (0.0, 0.0, 1.0, 1.0, 0.0)  # official --clip_conv_layer_weights "0,0,1.0,1.0,0"
FC_LOSS_WEIGHT = 0.1                            # official --clip_fc_loss_weight
NUM_AUGS = 4                                    # official --num_aug_clip
DISTORTION = 0.5                                # RandomPerspective(distortion_scale=0.5)
CROP_SCALE = 0.8                                # RandomResizedCrop(scale=(0.8, 0.8), ratio=(1, 1))


def resnet_stages(visual: ModifiedResNet, x: torch.Tensor, indices: Sequence[int]
                  ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass of an open_clip ``ModifiedResNet`` on normalised pixels Tensor[B, 3, H, W]: (the outputs of the
    stages at ``indices`` — into [stem, layer1, layer2, layer3, layer4], CLIPasso's numbering — as Tensor[B, C,
    h, w], in order; the pooled embedding Tensor[B, D], equal to ``visual(x)``).

    Our own walk through the tower: open_clip 3.3's ``ModifiedResNet.forward_intermediates`` truncates the blocks
    after the last requested index even when ``stop_early`` is False, then feeds that to ``attnpool``.
    """
    feats, h = [], x
    for i, block in enumerate((visual.stem, visual.layer1, visual.layer2, visual.layer3, visual.layer4)):
        h = block(h)
        if i in indices:
            feats.append(h)
    return feats, visual.attnpool(h)


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=gen).item())


def perspective_params(
    width: int, height: int, distortion: float, gen: torch.Generator
) -> tuple[list[list[int]], list[list[int]]]:
    """Start/end corner points drawn as ``torchvision.transforms.RandomPerspective.get_params`` draws them."""
    hw, hh = width // 2, height // 2
    dx, dy = int(distortion * hw), int(distortion * hh)
    tl = [_randint(0, dx + 1, gen), _randint(0, dy + 1, gen)]
    tr = [_randint(width - dx - 1, width, gen), _randint(0, dy + 1, gen)]
    br = [_randint(width - dx - 1, width, gen), _randint(height - dy - 1, height, gen)]
    bl = [_randint(0, dx + 1, gen), _randint(height - dy - 1, height, gen)]
    start = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    return start, [tl, tr, br, bl]


def crop_params(width: int, height: int, scale: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of ``RandomResizedCrop.get_params`` with scale=(s, s), ratio=(1, 1)."""
    side = round(math.sqrt(scale * width * height))
    side_h, side_w = min(side, height), min(side, width)
    return _randint(0, height - side_h + 1, gen), _randint(0, width - side_w + 1, gen), side_h, side_w


class SketchLoss:
    """CLIPasso's loss against one target image.

    Args:
        loaded: a ``clipkit.registry.LoadedModel`` (open_clip ViT or ModifiedResNet image tower), frozen.
        target: Tensor[1, 3, H, W] in [0, 1], the target at canvas size (white background).
        generator: seeds the augmentation parameters.
    """

    def __init__(
        self,
        loaded,
        target: torch.Tensor,
        *,
        generator: torch.Generator,
        num_augs: int = NUM_AUGS,
        conv_weights: Sequence[float] = CONV_LAYER_WEIGHTS,
        fc_weight: float = FC_LOSS_WEIGHT,
    ) -> None:
        self.visual = loaded.model.visual
        for p in loaded.model.parameters():  # frozen: no backward work on CLIP's weights
            p.requires_grad_(False)
        self.is_resnet = isinstance(self.visual, ModifiedResNet)
        if not self.is_resnet and not hasattr(getattr(self.visual, "transformer", None), "resblocks"):
            raise UsageError(
                f"sketch needs an open_clip ViT or ResNet image tower; {loaded.name!r} has neither"
            )
        self.size = tuple(loaded.image_size)
        self.mean = torch.tensor(loaded.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(loaded.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.gen = generator
        self.num_augs = num_augs
        self.fc_weight = fc_weight
        self.layers = self._layer_weights(conv_weights)
        self.target = target.float()
        with torch.no_grad():
            self.target_clean = self._features(self._clean(self.target))

    def _layer_weights(self, conv_weights: Sequence[float]) -> dict[int, float]:
        """{feature index: weight} for the non-zero official layer weights."""
        wanted = {i: float(w) for i, w in enumerate(conv_weights) if w}
        if self.is_resnet:
            return wanted
        depth = len(self.visual.transformer.resblocks)
        out: dict[int, float] = {}
        for i, w in wanted.items():
            j = min(i, depth - 1)
            out[j] = out.get(j, 0.0) + w
        return out

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bicubic", align_corners=False, antialias=True)

    def _clean(self, x: torch.Tensor) -> torch.Tensor:
        """Clean view Tensor[B, 3, h, w]: resized to the model's input and normalised (official eval view)."""
        return self._normalise(self._resize(x))

    def _augment(self, x: torch.Tensor, start, end, crop) -> torch.Tensor:
        """One augmentation with given parameters: perspective, resized crop, CLIP normalisation."""
        out = TF.perspective(x, start, end, interpolation=InterpolationMode.BILINEAR, fill=[0.0] * 3)
        out = TF.resized_crop(out, *crop, list(self.size), antialias=True)
        return self._normalise(out)

    def _augment_pairs(self, sketch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_augs`` augmented (sketch, target) pairs with shared parameters → two Tensor[A, 3, h, w].

        The official code augments ``cat([sketch, target])``; the target half is done here without autograd
        (same parameters, same pixels), which halves the costly grid-sample backward.
        """
        height, width = sketch.shape[-2:]
        target = self.target.to(sketch.device)
        xs, ys = [], []
        for _ in range(self.num_augs):
            start, end = perspective_params(width, height, DISTORTION, self.gen)
            crop = crop_params(width, height, CROP_SCALE, self.gen)
            xs.append(self._augment(sketch, start, end, crop))
            with torch.no_grad():
                ys.append(self._augment(target, start, end, crop))
        return torch.cat(xs), torch.cat(ys)

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(intermediate activations at ``self.layers``, final embedding Tensor[B, D]) of normalised input."""
        idx = sorted(self.layers)
        if self.is_resnet:
            return resnet_stages(self.visual, x, idx)
        out = self.visual.forward_intermediates(x, indices=idx, output_fmt="NLC", output_extra_tokens=True)
        prefix, tokens = out["image_intermediates_prefix"], out["image_intermediates"]
        feats = [torch.cat([pre, tok], dim=1) for pre, tok in zip(prefix, tokens, strict=True)]
        return feats, out["image_features"]

    def _combine(
        self, fx: tuple[list[torch.Tensor], torch.Tensor], fy: tuple[list[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {}
        for (layer, w), a, b in zip(sorted(self.layers.items()), fx[0], fy[0], strict=True):
            parts[f"conv{layer}"] = w * torch.square(a - b).mean()
        if self.fc_weight:
            cos = F.cosine_similarity(fx[1], fy[1], dim=1)
            parts["fc"] = self.fc_weight * (1.0 - cos).mean()
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def __call__(self, sketch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a sketch Tensor[1, 3, H, W] (differentiable): clean view + augmented views."""
        xs_aug, ys_aug = self._augment_pairs(sketch)
        xs = torch.cat([self._clean(sketch), xs_aug])
        with torch.no_grad():
            fy_aug = self._features(ys_aug)
        fy = (
            [torch.cat([c, a]) for c, a in zip(self.target_clean[0], fy_aug[0], strict=True)],
            torch.cat([self.target_clean[1], fy_aug[1]]),
        )
        return self._combine(self._features(xs), fy)

    @torch.no_grad()
    def evaluate(self, sketch: torch.Tensor) -> float:
        """Evaluation loss (clean view only, the official ``mode="eval"``) of a sketch Tensor[1, 3, H, W]."""
        total, _ = self._combine(self._features(self._clean(sketch)), self.target_clean)
        return float(total)

    @torch.no_grad()
    def embedding(self, image: torch.Tensor) -> torch.Tensor:
        """L2-normalised final embedding Tensor[B, D] of images Tensor[B, 3, H, W] in [0, 1] (clean view)."""
        return F.normalize(self._features(self._clean(image))[1].float(), dim=-1)
