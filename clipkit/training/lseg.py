"""Train an LSeg head (``clipkit.lseg``) for a frozen CLIP model on the shapes world's semantic masks.

LSeg's recipe (isl-org/lang-seg): the image encoder's decoder is trained with pixel-wise cross-entropy over
``cos(pixel, text) / 0.07`` logits against the text embeddings of *all* dataset labels (here background + the
48 "<colour> <shape>" categories, so the label index equals the category id); the text encoder is frozen.
The CLIP image tower is frozen here too (only the DPT-style head learns).

Deviations, for a CPU budget of minutes: AdamW (lr 1e-3, weight decay 1e-4) with lang-seg's poly decay
(power 0.9) instead of SGD at lr 0.004 for hundreds of epochs; scenes are generated on the fly at the model's
input size with random horizontal flips instead of lang-seg's scale/crop augmentation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

BACKGROUND_LABEL = "background"


@dataclass
class LSegTrainConfig:
    """Settings of ``clipkit world train-lseg`` (every field is a CLI option)."""

    model: str = "shapes-clip"
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    features: int = 32
    seed: int = 0
    scene_seed: int = 4242  # stream of training scenes; evaluation uses a different stream
    max_objects: int = 4
    eval_scenes: int = 100
    eval_seed: int = 777
    templates: str | None = None  # default: the model's own
    threads: int | None = 2
    init: str | None = None  # a head (bundled name or folder) to continue from, e.g. after the CLIP changed


def _scene_batch(cfg: LSegTrainConfig, start: int, size: tuple[int, int], rng: np.random.Generator,
                 mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """``cfg.batch_size`` generated scenes: normalised pixels ``[B, 3, H, W]``, labels ``[B, H, W]`` int64."""
    from clipkit.world.scenes import SceneConfig, generate_scene

    scfg = SceneConfig(size=(size[1], size[0]), max_objects=cfg.max_objects)
    xs, ys = [], []
    for i in range(cfg.batch_size):
        scene = generate_scene(cfg.scene_seed, start + i, scfg)
        img = np.asarray(scene.image, dtype=np.float32) / 255.0
        lab = scene.label_map().astype(np.int64)
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        xs.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
        ys.append(torch.from_numpy(np.ascontiguousarray(lab)))
    x = (torch.stack(xs) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x, torch.stack(ys)


def evaluate_head(model: Any, head: Any, *, n: int = 100, seed: int = 777, max_objects: int = 4) -> dict[str, float]:
    """mIoU of ``head`` on ``n`` held-out generated scenes at the model's input size.

    Each scene is segmented with all 48 category names (as ``eval segment --labels-from-data`` on an export).
    """
    from clipkit.evaluation.segmentation import confusion_matrix, miou_from_confusion
    from clipkit.methods.segment import SegmentPredictor
    from clipkit.world.scenes import CATEGORIES, SceneConfig, generate_scene

    size = tuple(model.image_size)
    seg = SegmentPredictor(model, list(CATEGORIES), head_module=head)
    conf = np.zeros((len(CATEGORIES) + 1,) * 2, dtype=np.int64)
    start = time.perf_counter()
    for i in range(n):
        scene = generate_scene(seed, i, SceneConfig(size=(size[1], size[0]), max_objects=max_objects))
        pred, _ = seg.segment_image(scene.image, keep_probs=False)
        conf += confusion_matrix(pred, scene.label_map(), len(CATEGORIES) + 1)
    out = miou_from_confusion(conf, [BACKGROUND_LABEL, *CATEGORIES])
    return {"miou": out["miou"], "pixel_accuracy": out["pixel_accuracy"],
            "ms_per_image": round(1000 * (time.perf_counter() - start) / n, 1), "scenes": n}


def train_lseg(cfg: LSegTrainConfig, out: str | Path, *, quiet: bool = False,
               command: str | None = None) -> dict[str, Any]:
    """Train a head, evaluate it on held-out scenes and write it (weights, config, model card) to ``out``.

    Returns the metrics dict also stored in the config's ``meta``.
    """
    from clipkit import lseg
    from clipkit.device import set_threads
    from clipkit.prompts import text_embeddings
    from clipkit.registry import load_model
    from clipkit.runner import progress
    from clipkit.world.scenes import CATEGORIES

    if cfg.steps < 1 or cfg.batch_size < 1:
        from clipkit.errors import UsageError

        raise UsageError("--steps and --batch-size must be at least 1")
    if cfg.threads:
        set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = load_model(cfg.model)
    labels = [BACKGROUND_LABEL, *CATEGORIES]  # index == category id
    with torch.no_grad():
        text = text_embeddings(model, labels, cfg.templates).float()
    if cfg.init:  # continue an existing head (its decoder width wins over cfg.features)
        head = lseg.load_head(cfg.init, model).to(model.device)
        head.cfg.clip_model = cfg.model
    else:
        head = lseg.new_head(model, clip_model=cfg.model, features=cfg.features).to(model.device)
    head.cfg.background = [BACKGROUND_LABEL]
    head.cfg.templates = cfg.templates
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / cfg.steps) ** 0.9)
    size = tuple(model.image_size)
    start, losses = time.perf_counter(), []
    head.train()
    with progress(cfg.steps, "train-lseg", quiet) as bar:
        for step in range(cfg.steps):
            x, y = _scene_batch(cfg, step * cfg.batch_size, size, rng, model.mean, model.std)
            logits = lseg.lseg_logits_crops(model, head, x.to(model.device), text)
            loss = F.cross_entropy(logits, y.to(model.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.advance()
            if not quiet and (step % 50 == 0 or step == cfg.steps - 1):
                print(f"step {step:5d}  loss {np.mean(losses[-50:]):.4f}  {time.perf_counter() - start:.0f}s",
                      flush=True)
    train_s = time.perf_counter() - start
    head.eval()
    metrics = evaluate_head(model, head, n=cfg.eval_scenes, seed=cfg.eval_seed, max_objects=cfg.max_objects)
    metrics.update({"final_loss": round(float(np.mean(losses[-50:])), 4), "train_seconds": round(train_s, 1)})
    head.cfg.meta = {"train": asdict(cfg), "metrics": metrics, "command": command or "",
                     "clip_identity": getattr(model, "identity", "")}
    lseg.save_head(head, out)
    _write_card(Path(out), head, metrics, cfg, command)
    return metrics


def _write_card(out: Path, head: Any, metrics: dict, cfg: LSegTrainConfig, command: str | None) -> None:
    from clipkit.writers import atomic_write_text

    hcfg = head.cfg
    n_params = f"{sum(p.numel() for p in head.parameters()):,} (stored as fp16)"
    init_md = "" if not cfg.init else (
        f"\n- Continued from the head `{cfg.init}` (trained on the previous weights of `{cfg.model}`), with a"
        " fresh\n  poly-decay schedule: the CLIP was retrained, so its features moved under the head.")
    card = f"""# LSeg head for `{cfg.model}`

A DPT-style decoder (LSeg, Li et al., ICLR 2022; isl-org/lang-seg) over the frozen image tower of
`{cfg.model}`: hooks on blocks {hcfg.hooks}, {hcfg.features} fusion features, per-pixel embeddings in the
model's {hcfg.out_dim}-d joint space; logits = cos(pixel, text) / 0.07. Use it with
`clipkit segment IMAGES --labels ... --head lseg-shapes`.

## Training
- Data: shapes-world scenes generated on the fly (stream seed {cfg.scene_seed}, 1-{cfg.max_objects} objects,
  {cfg.steps * cfg.batch_size} scenes at the model's input size, random horizontal flips).
- Loss: pixel-wise cross-entropy over background + the 48 "<colour> <shape>" labels (text encoder frozen,
  templates: {cfg.templates or "the model's own"}).
- Optimiser: AdamW lr {cfg.lr}, weight decay {cfg.weight_decay}, poly decay 0.9; {cfg.steps} steps of
  batch {cfg.batch_size}; seed {cfg.seed}; {metrics['train_seconds']} s on CPU;
  final loss {metrics['final_loss']}.{init_md}
- Parameters: {n_params}.

## Held-out evaluation
{metrics['scenes']} scenes of stream seed {cfg.eval_seed} (never seen in training), segmented with all 48
category names plus "background": mIoU **{metrics['miou']:.3f}**,
pixel accuracy {metrics['pixel_accuracy']:.3f}, {metrics['ms_per_image']} ms/image.

## Reproduce
```
{command or 'clipkit world train-lseg OUT/'}
```
"""
    atomic_write_text(out / "README.md", card)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
