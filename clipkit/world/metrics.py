"""Model-card metrics of a CLIP on held-out shapes-world scenes.

All metrics draw fresh scenes from a stream (``seed``) disjoint from training (training uses seed 0 streams),
at random square sizes, and feed them through the model's own eval transform.

- zero-shot top-1 over all colour×shape classes on single-object scenes (bare-name labels, "none" templates);
  colour-only / shape-only accuracy = the colour (shape) word of that top-1 prediction is right;
- caption retrieval R@1 (image->text and text->image) among N 2-object scenes with their captions;
- dense patch–text accuracy on 2-object scenes: for each object, does the patch under its centre score its own
  label above the other object's label? Reported for plain patch tokens and for clipkit.dense's
  training-free variants.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from clipkit.world.scenes import CATEGORIES, SceneConfig, generate_scene


@torch.no_grad()
def text_features(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """float32 [N, D] L2-normalised text embeddings."""
    return F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


@torch.no_grad()
def plain_patch_tokens(model, pixels: torch.Tensor) -> torch.Tensor:
    """Plain patch embeddings of an open_clip ViT: ln_post(last-layer tokens) @ proj, L2-normalised.

    pixels: float [B, 3, S, S] at the model's input size. Returns float32 [B, h, w, D]. With pool_type "avg"
    these are exactly the vectors whose mean is the image embedding.
    """
    v = model.visual
    x = v._embeds(pixels)
    x = v.transformer(x)
    x = v.ln_post(x)[:, 1:]
    if v.proj is not None:
        x = x @ v.proj
    b, n, d = x.shape
    h = w = round(n**0.5)
    return F.normalize(x.float(), dim=-1).reshape(b, h, w, d)


def _scenes(n: int, seed: int, k: int, size_range: tuple[int, int]):
    cfg = SceneConfig(size_range=size_range, min_objects=k, max_objects=k)
    return [generate_scene(seed, i, cfg, n_objects=k) for i in range(n)]


@torch.no_grad()
def _encode_images(model, preprocess, images, batch: int = 100) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        px = torch.stack([preprocess(im) for im in images[i:i + batch]])
        out.append(F.normalize(model.encode_image(px).float(), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def zero_shot(model, tokenizer, preprocess, n: int = 480, seed: int = 1000,
              size_range: tuple[int, int] = (64, 448)) -> dict:
    """Zero-shot top-1 over all categories on ``n`` single-object scenes, plus colour-/shape-only accuracy."""
    scenes = _scenes(n, seed, 1, size_range)
    txt = text_features(model, tokenizer, list(CATEGORIES))
    img = _encode_images(model, preprocess, [s.image for s in scenes])
    pred = (img @ txt.T).argmax(1).tolist()
    truth = [s.objects[0].name for s in scenes]
    names = [CATEGORIES[p] for p in pred]
    pairs = [(p.split(), t.split()) for p, t in zip(names, truth, strict=True)]
    return {
        "zero_shot_top1": float(np.mean([p == t for p, t in pairs])),
        "colour_acc": float(np.mean([p[0] == t[0] for p, t in pairs])),
        "shape_acc": float(np.mean([p[1] == t[1] for p, t in pairs])),
        "n": n,
    }


@torch.no_grad()
def partial_names(model, tokenizer, preprocess, n: int = 240, seed: int = 1100,
                  size_range: tuple[int, int] = (64, 448)) -> dict:
    """Naming an object by one word (issues #17, #18), top-1 on ``n`` single-object scenes each:
    ``shape_alone``: photos against the 6 bare shape names ("circle"); ``colour_alone``: photos against
    "<colour> one" for the 8 colours; ``drawing_shape``: line drawings (clipkit.world.drawings, black or coloured
    ink) against the 6 shape names."""
    from clipkit.world.scenes import COLOURS, SHAPES

    photos = _scenes(n, seed, 1, size_range)
    cfg = SceneConfig(size_range=size_range, min_objects=1, max_objects=1)
    drawings = [generate_scene(seed + 1, i, cfg, n_objects=1, drawing=True) for i in range(n)]

    def top1(scenes, texts: list[str], truth) -> float:
        txt = text_features(model, tokenizer, texts)
        pred = (_encode_images(model, preprocess, [s.image for s in scenes]) @ txt.T).argmax(1).tolist()
        return float(np.mean([texts[p] == truth(s) for p, s in zip(pred, scenes, strict=True)]))

    return {
        "shape_alone": top1(photos, list(SHAPES), lambda s: s.objects[0].shape),
        "colour_alone": top1(photos, [f"{c} one" for c in COLOURS], lambda s: f"{s.objects[0].colour} one"),
        "drawing_shape": top1(drawings, list(SHAPES), lambda s: s.objects[0].shape),
        "n": n,
    }


@torch.no_grad()
def retrieval(model, tokenizer, preprocess, n: int = 200, seed: int = 2000,
              size_range: tuple[int, int] = (64, 448)) -> dict:
    """Caption retrieval R@1 among ``n`` 2-object scenes (each scene's own exported caption)."""
    scenes = _scenes(n, seed, 2, size_range)
    img = _encode_images(model, preprocess, [s.image for s in scenes])
    txt = text_features(model, tokenizer, [s.caption for s in scenes])
    sim = img @ txt.T
    target = torch.arange(n)
    return {"i2t_r1": float((sim.argmax(1) == target).float().mean()),
            "t2i_r1": float((sim.argmax(0) == target).float().mean()), "n": n}


PatchFn = Callable[[torch.Tensor], torch.Tensor]  # pixels [B,3,S,S] -> [B,h,w,D] normalised


@torch.no_grad()
def dense_accuracy(model, tokenizer, preprocess, patch_fns: dict[str, PatchFn], n: int = 200,
                   seed: int = 3000, size_range: tuple[int, int] = (96, 224)) -> dict:
    """Dense patch–text accuracy per variant on ``n`` 2-object scenes (2n decisions each).

    The object's centre (its visible pixel farthest from the edge) is mapped to the patch grid of the
    resized input; the decision is right when that patch's similarity to the object's own label exceeds its
    similarity to the other object's label.
    """
    scenes = _scenes(n, seed, 2, size_range)
    txt = text_features(model, tokenizer, list(CATEGORIES))
    px = torch.stack([preprocess(s.image) for s in scenes])
    out = {}
    for name, fn in patch_fns.items():
        correct = []
        for i in range(0, n, 50):
            tok = fn(px[i:i + 50])  # [b, h, w, D]
            for b, s in enumerate(scenes[i:i + 50]):
                gh, gw = tok.shape[1:3]
                w, h = s.size
                ids = [o.category_id - 1 for o in s.objects]
                for k, o in enumerate(s.objects):
                    cx, cy = o.center
                    r, c = min(int(cy / h * gh), gh - 1), min(int(cx / w * gw), gw - 1)
                    sims = tok[b, r, c] @ txt[ids].T
                    correct.append(bool(sims[k] > sims[1 - k]))
        out[name] = float(np.mean(correct))
    return {"dense_acc": out, "n": n}


def dense_variants(model) -> dict[str, PatchFn]:
    """Patch functions to compare: "plain" always, plus clipkit.dense's training-free variants (NACLIP,
    ClearCLIP, SCLIP, MaskCLIP) when that module is present."""
    fns: dict[str, PatchFn] = {"plain": lambda px: plain_patch_tokens(model, px)}
    try:
        from clipkit import dense
    except ImportError:
        return fns
    for v in dense.VARIANTS:
        if v != "plain":
            fns[v] = (lambda px, v=v: dense.patch_embeddings(model, px, variant=v))
    return fns


def evaluate(model, tokenizer, preprocess, *, n_zero_shot: int = 480, n_pairs: int = 200,
             dense: bool = True) -> dict:
    """All model-card metrics (see module docstring)."""
    model.eval()
    res = {"zero_shot": zero_shot(model, tokenizer, preprocess, n=n_zero_shot),
           "retrieval": retrieval(model, tokenizer, preprocess, n=n_pairs),
           "dense": dense_accuracy(model, tokenizer, preprocess,
                                    dense_variants(model) if dense else {"plain": dense_variants(model)["plain"]},
                                    n=n_pairs)}
    return res
