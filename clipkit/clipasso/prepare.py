"""CLIPasso's target preparation: ``--mask_object`` (background removal), ``--fix_scale`` (pad to a square)
and the choice of the saliency model.

Official code (yael-vinker/CLIPasso, ``painterly_rendering.get_target`` and ``sketch_utils``):

* ``mask_object``: a U2-Net salient-object mask of the target (input resized to a short side of
  ``min(320, short side)``, CLIP-normalised; output min–max normalised, thresholded at 0.5, resized back to the
  image and thresholded again); the target becomes ``image / image.max()`` inside the mask and white (1)
  outside, rescaled by its maximum to uint8;
* ``fix_scale`` (applied after masking): the target is centred on a white square of side ``max(h, w) + 20``
  (so 10 px of white on each side of the long edge — also for an image that is already square) instead of being
  stretched to the square canvas;
* ``saliency_model`` / ``saliency_clip_model``: the attention saliency comes from its own CLIP (ViT-B/32),
  not from the loss model (RN101), run on the prepared target.

Deviations:

* **No U2-Net** (its weights cannot be downloaded here). The mask is GrabCut (Rother et al. 2004, OpenCV's
  ``cv2.grabCut``, 5 iterations at a long side of ≤ 320 px like U2-Net's input) started from a rectangle: a
  frame of 2 % of the side at the border is definite background, everything inside probable foreground, and
  GrabCut's colour models decide each pixel. So it assumes the object does not touch the border and differs
  in colour from what does. Measured: IoU 0.99 against the shapes world's exact masks (30 one-object scenes,
  all three backgrounds); on ``examples/photos`` it keeps the astronaut, the cup and the cat's head, and
  fails on the rocket (a thin object in a scene that fills the frame). Seeding GrabCut with the bundled
  shapes-clip's attention instead was as good on the world and worse on photos (it lost the astronaut's head
  and the whole cat), so the attention is not used here.
* **Empty mask**: when GrabCut keeps no pixel, the image is used unmasked (the official code would sketch a
  blank white target).
* **Saliency models** must be attention ViTs (the official code also allows a ResNet via Grad-CAM on a text
  prompt; clipkit has no text target in ``sketch``).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from clipkit.errors import UsageError

MASK_SIDE = 320        # official: U2-Net sees the image at a short side of min(320, short side)
FIX_SCALE_MARGIN = 20  # official fix_image_scale: max(h, w) + 20
GRABCUT_ITERS = 5


def fix_image_scale(image: Image.Image) -> Image.Image:
    """Centre ``image`` on a white square of side ``max(w, h) + 20`` (official ``fix_image_scale``)."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    side = max(w, h) + FIX_SCALE_MARGIN
    out = Image.new("RGB", (side, side), (255, 255, 255))
    out.paste(rgb, (side // 2 - w // 2, side // 2 - h // 2))
    return out


def grabcut_mask(image: Image.Image) -> np.ndarray:
    """Foreground mask bool [H, W] of an RGB image by GrabCut from a border-frame rectangle (see above).

    GrabCut runs at a long side of ≤ 320 px; the mask is resized back (nearest) to the image.
    """
    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = min(1.0, MASK_SIDE / max(w, h))
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    small = np.ascontiguousarray(np.asarray(rgb.resize((sw, sh), Image.Resampling.BICUBIC))[:, :, ::-1])
    frame = max(1, round(0.02 * min(sw, sh)))
    seed = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    seed[frame:-frame, frame:-frame] = cv2.GC_PR_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(small, seed, None, bgd, fgd, GRABCUT_ITERS, cv2.GC_INIT_WITH_MASK)
    fg = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).astype(np.uint8)
    return cv2.resize(fg, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def apply_mask(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The official masked target: ``image / max`` inside ``mask`` (bool [H, W]), white outside, as uint8 RGB.

    An empty mask returns the image unchanged (deviation: the official code would return a white image).
    """
    rgb = image.convert("RGB")
    if not mask.any():
        return rgb
    arr = np.asarray(rgb, np.float64)
    arr = arr / max(float(arr.max()), 1e-12)
    arr = np.where(mask[..., None], arr, 1.0)
    return Image.fromarray((arr / arr.max() * 255).astype(np.uint8), "RGB")


def saliency_model_for(loaded, name: str = "auto", pretrained: str | None = None):
    """The model whose attention gives the saliency (a ``clipkit.registry.LoadedModel``), on ``loaded``'s device.

    ``name="auto"``: the loss model ``loaded`` when it is an attention ViT, else the bundled ViT
    (``shapes-clip``) — the official setup pairs a ViT saliency model with a ResNet loss model. Any other name
    is loaded like ``-m NAME [-p PRETRAINED]`` and must be an attention ViT.

    Raises:
        UsageError: the named model is not an attention ViT.
    """
    from clipkit.registry import DEFAULT_MODEL, load_model
    from clipkit.saliency import is_attention_vit

    if name == "auto":
        if is_attention_vit(loaded.model.visual):
            return loaded
        return load_model(DEFAULT_MODEL, device=loaded.device)
    model = load_model(name, pretrained, device=loaded.device)
    if not is_attention_vit(model.model.visual):
        raise UsageError(f"--saliency-model {name}: not a CLIP ViT with attention blocks (saliency needs one)")
    return model


SCHEDULE_FIELDS = ("iterations", "seeds", "eval_interval", "min_delta")


def model_schedule(opts, loaded):
    """``opts`` (a :class:`clipkit.configs.SketchConfig`) with the loss model's own schedule for every schedule
    field the caller left at its default.

    The defaults are CLIPasso's (≤ 2001 steps × 3 seeds), a GPU budget for RN101. A model may ship a cheaper one
    in its ``clipkit.json`` as ``"sketch_schedule": {"iterations": 300, "seeds": 1}`` (the bundled shapes-clip
    does, so a finished sketch takes under a minute on one CPU thread). A value the caller set — on the command
    line, in Python, in a config — always wins, so ``--iterations 2001 --seeds 3`` is the official schedule for
    any model. Only :data:`SCHEDULE_FIELDS` are read from the model; other keys are ignored.
    """
    own = (getattr(loaded, "meta", None) or {}).get("sketch_schedule") or {}
    changes = {k: own[k] for k in SCHEDULE_FIELDS if k in own and k not in opts.model_fields_set}
    return opts.replace(**changes) if changes else opts
