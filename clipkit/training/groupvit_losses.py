"""GroupViT training losses (NVlabs/GroupViT ``models/multi_label_contrastive.py``), single process.

Both use L2-normalised features and a learnable temperature ``exp(logit_scale)`` clamped at 100.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _scale(logit_scale: Tensor) -> Tensor:
    return logit_scale.exp().clamp(max=100.0)


def image_text_contrastive(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE: ``image [B, D]`` and ``text [B, D]`` (row i belongs to image i) -> scalar."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = image @ text.t() * _scale(logit_scale)
    labels = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def multi_label_contrastive(image: Tensor, prompts: Tensor, logit_scale: Tensor) -> Tensor:
    """Multi-label contrastive loss between each image and the K noun prompts of its caption.

    ``image [B, D]`` (L1 = 1 feature per image), ``prompts [B, K, D]``. Image-to-text: softmax over all B*K
    prompts in the batch, soft target 1/K on each of the image's own K prompts. Text-to-image: each prompt's
    softmax over the B images, target its own image. Mean of the two soft cross-entropies.
    """
    b, k, _ = prompts.shape
    image = F.normalize(image, dim=-1)
    text = F.normalize(prompts, dim=-1).reshape(b * k, -1)
    scale = _scale(logit_scale)
    logits_img = image @ text.t() * scale  # [B, B*K]
    target_img = torch.eye(b, device=image.device, dtype=image.dtype).repeat_interleave(k, dim=1) / k
    loss_img = torch.sum(-target_img * F.log_softmax(logits_img, dim=-1), dim=-1).mean()
    logits_txt = logits_img.t()  # [B*K, B]
    target_txt = torch.arange(b, device=image.device).repeat_interleave(k)
    loss_txt = F.cross_entropy(logits_txt, target_txt)
    return 0.5 * (loss_img + loss_txt)


def _claims(groups: Tensor, prompts: Tensor, noun_ids: Tensor, scale: Tensor
            ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
    """Scaled cosine logits ``[B, G, M]`` of every group against the M real prompts, the image of each prompt
    ``[M]``, its noun id ``[M]`` and its best-matching group in its own image ``[M]`` (no gradient through
    the choice); None when the batch has no real prompt."""
    b, k = prompts.shape[:2]
    ids = noun_ids.reshape(-1)
    valid = ids >= 0
    if not bool(valid.any()):
        return None
    gn = F.normalize(groups, dim=-1)
    tn = F.normalize(prompts, dim=-1).reshape(b * k, -1)[valid]  # [M, D]
    logits = torch.einsum("bgd,md->bgm", gn, tn) * scale  # [B, G, M]
    owner = torch.arange(b, device=groups.device).repeat_interleave(k)[valid]  # image of each anchor
    best = logits[owner, :, torch.arange(len(tn), device=groups.device)].detach().argmax(dim=-1)  # [M]
    return logits, owner, ids[valid], best


def group_noun_contrastive(groups: Tensor, prompts: Tensor, noun_ids: Tensor, logit_scale: Tensor) -> Tensor:
    """Group-level multi-label contrastive loss (an addition of clipkit's, NOT in the official GroupViT).

    ``groups [B, G, D]`` projected final segment tokens, ``prompts [B, K, D]`` the noun prompts, ``noun_ids
    [B, K]`` int64 noun identity of each prompt (-1 = padding with the caption: ignored). For every real prompt
    (anchor), the image's best-matching group (argmax, no gradient through the choice) must pick that noun out
    of all real prompts of the batch, including the other nouns of the *same* image; prompts naming the same
    noun (any template, any image) are all positives. A single group holding the whole image cannot prefer one
    of its image's nouns over another, so the loss rewards one group per object, which the image-level
    losses alone did not (they collapsed to 1-2 groups in our CPU budget, see docs/group.md).
    """
    claims = _claims(groups, prompts, noun_ids, _scale(logit_scale))
    if claims is None:
        return groups.sum() * 0.0
    logits, owner, vid, best = claims
    rows = logits[owner, best]  # [M, M]: the chosen group vs every real prompt
    target = (vid[:, None] == vid[None, :]).to(rows.dtype)
    target = target / target.sum(dim=-1, keepdim=True)
    return torch.sum(-target * F.log_softmax(rows, dim=-1), dim=-1).mean()


def unclaimed_group_flatness(groups: Tensor, prompts: Tensor, noun_ids: Tensor, complete: Tensor,
                             logit_scale: Tensor) -> Tensor:
    """Groups that no noun of their caption claims should name nothing (an addition of clipkit's, NOT official).

    ``groups [B, G, D]``, ``prompts [B, K, D]``, ``noun_ids [B, K]`` as in :func:`group_noun_contrastive`;
    ``complete [B]`` bool: the caption's prompts cover *all* of the image's objects (otherwise an unclaimed group
    may hold an unmentioned object, and the image is skipped). A group is claimed when it is some noun's
    best-matching group. For every unclaimed group of a complete image: KL(softmax over the batch's prompts ||
    uniform) at the inference temperature ``exp(logit_scale)`` (not trained by this term), so that its class
    scores are flat and the official rule's background threshold removes it. Returns a scalar (0 if none).
    """
    claims = _claims(groups, prompts, noun_ids, _scale(logit_scale).detach())
    if claims is None:
        return groups.sum() * 0.0
    logits, owner, _, best = claims
    claimed = torch.zeros(groups.shape[:2], dtype=torch.bool, device=groups.device)
    claimed[owner, best] = True
    mask = ~claimed & complete.to(groups.device)[:, None]
    if not bool(mask.any()):
        return groups.sum() * 0.0
    logp = F.log_softmax(logits[mask], dim=-1)  # [U, M]
    return (torch.sum(logp.exp() * logp, dim=-1) + math.log(logp.shape[-1])).mean()
