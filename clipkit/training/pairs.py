"""Photo–drawing pairs: a drawing's intermediate activations trained to equal its photo's (issue #18).

CLIPasso's geometric loss compares a sketch's and a photo's activations at CLIP's middle layers and relies on
what CLIP learned from the web: a line drawing of an object and a photo of it activate those layers alike, so
strokes on the photo's outlines lower the loss. A model trained on the shapes world only has no reason to
(the bundled shapes-clip named every drawing "star"). Here the world renders each training scene twice, as the
photo and as a line drawing of the same layout (:class:`clipkit.world.data.PoolConfig` ``pairs``), and the
drawing's block outputs are pulled to the photo's, with the photo side held fixed (a stop-gradient): the
photo's representation stays what the other losses make it, the drawing's joins it. Pulling alone leaves every
other ink pattern free, and a sketch optimiser finds them: filling the object with scribbles matched a photo's
activations better than its outline did. So each scene also comes as scribbles over its objects
(:func:`clipkit.world.drawings.scribble_objects`), which must stay at least ``e`` times farther from the photo
than the outline (a hinge on the log ratio of the two distances).

For a ResNet (:func:`resnet_with_blocks`) the pairs work once the stem sees edges rather than colour: a web
CLIP's first convolutions are oriented edge detectors, a tiny model trained for minutes on flat-coloured shapes
learns colour-blob detectors, and a CLIPasso sketch on those middle layers fills the object with hatching
instead of tracing it (session 7 pilots: 2–3 of 8 sketches recognised). :func:`freeze_edge_stem` fixes the
first convolution to oriented luminance gradients (what the web models learn there), so an ink line and a colour
edge start alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# CLIPasso's layers: clip_conv_layer_weights 0,0,1,1,0 = the outputs of blocks 2 and 3 of a ViT
# (clipkit.clipasso.loss maps the five weights onto the transformer blocks the same way)
PAIR_BLOCKS: tuple[int, ...] = (2, 3)


def edge_filters(channels: int = 8) -> torch.Tensor:
    """Float32 [channels, 3, 3, 3]: Sobel gradients at 0°, 90°, 45° and 135°, each in both polarities (so that
    after the stem's ReLU a dark line on light paper and a colour edge of either sign both respond), on the
    channel mean (luminance), cycled over ``channels``."""
    sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    sd = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 1.0, 2.0]]) / 4
    oriented = (sx, sx.T, sd, sd.flip(1))
    out = torch.empty(channels, 3, 3, 3)
    for o in range(channels):
        sign = 1.0 if (o // 4) % 2 == 0 else -1.0
        out[o] = (sign * oriented[o % 4])[None].expand(3, 3, 3) / 3
    return out


def freeze_edge_stem(model: torch.nn.Module) -> None:
    """Set the first convolution of an open_clip ``ModifiedResNet`` image tower to :func:`edge_filters` and
    freeze it (no gradient, so no optimiser updates it). Raises ValueError for other towers."""
    conv = getattr(model.visual, "conv1", None)
    if not isinstance(conv, torch.nn.Conv2d) or tuple(conv.weight.shape[1:]) != (3, 3, 3):
        raise ValueError("the edge stem needs an open_clip ModifiedResNet (a 3x3 RGB conv1)")
    with torch.no_grad():
        conv.weight.copy_(edge_filters(conv.weight.shape[0]))
    conv.weight.requires_grad_(False)


def resnet_with_blocks(visual: torch.nn.Module, pixels: torch.Tensor, blocks: Sequence[int]
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One pass of an open_clip ``ModifiedResNet``: (the pooled embedding [B, D] = ``visual(pixels)``, the
    outputs of ``blocks`` — indices into [stem, layer1, layer2, layer3, layer4], CLIPasso's numbering — as
    tokens [B, H·W, C]). The walk is CLIPasso's loss's own (:func:`clipkit.clipasso.loss.resnet_stages`), so
    training pairs the very activations the sketch loss compares."""
    from clipkit.clipasso.loss import resnet_stages

    kept, pooled = resnet_stages(visual, pixels, blocks)
    return pooled, [h.flatten(2).transpose(1, 2) for h in kept]


def tower_with_blocks(model: torch.nn.Module, pixels: torch.Tensor, blocks: Sequence[int]
                      ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One pass of an avg-pooled open_clip ViT image tower.

    Returns (image embedding [B, D], projected patch tokens [B, N, D], the outputs of ``blocks`` [B, 1 + N, W]
    with the class token first), unnormalised. The embedding is ``model.encode_image``'s (mean of
    ``ln_post(patch tokens)`` then ``proj``); the per-patch vectors live in the same space because ``proj`` is
    linear.
    """
    v = model.visual
    if v.pool_type != "avg" or v.final_ln_after_pool or v.attn_pool is not None:
        raise ValueError("patch features need pool_type 'avg' without final_ln_after_pool or attn pooling")
    x = v._embeds(pixels)
    if not v.transformer.batch_first:
        x = x.transpose(0, 1)
    kept = []
    for i, block in enumerate(v.transformer.resblocks):
        x = block(x)
        if i in blocks:
            kept.append(x if v.transformer.batch_first else x.transpose(0, 1))
    if not v.transformer.batch_first:
        x = x.transpose(0, 1)
    tokens = v.ln_post(x)[:, 1:] @ v.proj
    return tokens.mean(1), tokens, kept


def activation_distance(photo: Sequence[torch.Tensor], other: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per image, the mean over blocks of the mean squared difference of activations (CLIPasso's "L2"), every
    token, divided by the photo activations' mean square so that blocks of different scale weigh alike.

    photo, other: per block Tensor[B, T, W]; the photo side is detached here. Returns Tensor[B].
    """
    parts = []
    for p, o in zip(photo, other, strict=True):
        p = p.detach()
        parts.append(torch.square(o - p).mean(dim=(1, 2)) / torch.square(p).mean().clamp_min(1e-8))
    return torch.stack(parts).mean(0)


def paired_drawing_loss(photo: Sequence[torch.Tensor], drawing: Sequence[torch.Tensor],
                        scribble: Sequence[torch.Tensor] | None = None, margin: float = 1.0) -> torch.Tensor:
    """The drawing's mean :func:`activation_distance` to its photo, plus (with ``scribble``) the mean hinge
    ``relu(margin + log d(drawing) − log d(scribble))``: scribbles at least ``e^margin`` times farther."""
    d_draw = activation_distance(photo, drawing)
    loss = d_draw.mean()
    if scribble is not None:
        d_scribble = activation_distance(photo, scribble)
        gap = margin + torch.log(d_draw.clamp_min(1e-8)) - torch.log(d_scribble.clamp_min(1e-8))
        loss = loss + torch.relu(gap).mean()
    return loss
