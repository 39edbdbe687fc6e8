"""Train, evaluate and write ``shapes-judge`` or ``shapes-sketch`` with its model card (`clipkit world train-judge`,
`clipkit world train-sketch-model`)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clipkit.training.clip import save_hub_folder
from clipkit.training.clip_card import eval_transform  # same mean/std/resize as JUDGE_PREPROCESS, at any size
from clipkit.training.judge import JUDGE_PREPROCESS, TrainJudgeConfig, is_sketch_model, meta_for, train_judge
from clipkit.world.scenes import SHAPES, SceneConfig, generate_scene

EVAL_SEED = 1000  # held-out stream (the judge trains on 4242, shapes-clip on 0-6, the sketch bench uses 11)
KINDS = ("photos", "line drawings", "black line drawings")


@torch.no_grad()
def shape_accuracy(model, tokenizer, preprocess, n: int = 240, seed: int = EVAL_SEED) -> dict:
    """Zero-shot shape top-1 (6 bare shape names, colour-agnostic) on ``n`` held-out one-object scenes (random
    sides 96–448 px) as photos, as line drawings (the world's default style: black or coloured ink) and as black
    line drawings. Returns {kind: accuracy} plus "n"."""
    from clipkit.world.drawings import DrawingStyle

    cfg = SceneConfig(size_range=(96, 448), max_objects=1)
    styles = {"photos": False, "line drawings": True, "black line drawings": DrawingStyle(p_black=1.0)}
    txt = F.normalize(model.encode_text(tokenizer(list(SHAPES))).float(), dim=-1)
    truth = [SHAPES.index(generate_scene(seed, i, cfg).objects[0].shape) for i in range(n)]
    out: dict = {"n": n}
    for kind, style in styles.items():
        px = torch.stack([preprocess(generate_scene(seed, i, cfg, drawing=style).image) for i in range(n)])
        img = F.normalize(model.encode_image(px).float(), dim=-1)
        out[kind] = float(np.mean([int(p) == t for p, t in zip((img @ txt.T).argmax(1), truth, strict=True)]))
    return out


_SKETCH_ROLE = """It is the **loss model** of `clipkit sketch` (CLIPasso's role for RN101): the sketch's
layer2/layer3 activations are matched to the image's. Its first convolution is fixed to oriented edge filters
(`clipkit.training.pairs.edge_filters`), as a web CLIP's first layer learns them, and a line drawing's
layer2/layer3 activations are trained to equal its photo's (scribbles kept e× farther), so strokes on an
object's outline lower the loss and hatching does not. The sketch bench judges its sketches with the
independently trained `shapes-judge`. It knows the shapes world's 6 shapes and 8 colours and nothing else."""
_JUDGE_ROLE = """It is the **judge** of the sketch recognition test (`bench/sketch_recognition.py`): CLIPasso
optimises a sketch with one CLIP and checks it with another, so the sketch is made with the loss model and
judged by this independently trained ResNet. It knows the shapes world's 6 shapes and 8 colours and nothing
else."""


def _role(cfg: TrainJudgeConfig) -> str:
    """The card's paragraph on what the model is for."""
    return _SKETCH_ROLE if is_sketch_model(cfg) else _JUDGE_ROLE


def _pairs_line(cfg: TrainJudgeConfig) -> str:
    if not is_sketch_model(cfg):
        return ""
    return (f"- edge stem: {cfg.edge_stem} (conv1 fixed to `edge_filters`, not trained); pairs: {cfg.pair_weight}"
            " ×\n  `clipkit.training.pairs.paired_drawing_loss` at layer2/layer3: every scene also as a line\n"
            "  drawing of the same layout (pulled to the photo's activations) and as scribbles over its objects\n"
            "  (kept e× farther).\n")


def model_card(cfg: TrainJudgeConfig, *, steps_done: int, train_s: float, pool_s: float, metrics: dict | None,
               command: str, final_loss: float) -> str:
    """The README.md of the judge's folder."""
    v, t = cfg.model_cfg["vision_cfg"], cfg.model_cfg["text_cfg"]
    rows = "(not evaluated: run with --eval)" if not metrics else "\n".join(
        ["| zero-shot shape top-1 (6 shapes, bare names) on | value | scenes |", "|---|---|---|"]
        + [f"| held-out {k} | {metrics[k]:.3f} | {metrics['n']} |" for k in KINDS])
    return f"""# {cfg.name}

A small ResNet CLIP (open_clip `ModifiedResNet`, layers {v['layers']}, width {v['width']}, {v['image_size']} px;
text {t['layers']}×{t['width']}; {cfg.model_cfg['embed_dim']}-d joint space) trained from scratch on clipkit's
synthetic shapes world, photos **and line drawings**. {_role(cfg)}

Use bare labels (template set `none`): `clipkit classify drawing.png -m {cfg.name} --labels
"circle,square,triangle,star,hexagon,cross"`.

## Reproduce

```
{command}
```

Deterministic given the seed; float results can differ in the last digits across CPU types and thread counts.

## Training

- data: a pool of {cfg.pool_size} scenes of stream seed {cfg.seed} (disjoint from shapes-clip's streams 0–6,
  the sketch bench's 11 and the metrics' {EVAL_SEED}), drawn at {cfg.render_range[0]}–{cfg.render_range[1]} px and
  resized to {v['image_size']} px; objects per scene 1–{len(cfg.object_probs)} with probabilities
  {list(cfg.object_probs)}; {cfg.drawings:.0%} of the scenes drawn as line drawings (`clipkit.world.drawings`:
  outlines of varying width and wobble, black or coloured ink, plain paper); random flips.
- captions: the world's captions (black ink names the shape only: "a star"); with probability
  {cfg.p_shape_only} the colour words are dropped ("a red star left of a cross" → "a star left of a cross").
- loss: symmetric InfoNCE with soft targets over every caption of the batch that is *true* of the image
  ("a star" is true of a red star photo and of a black star drawing), `clipkit.training.judge.judge_loss_fn`,
  plus {cfg.word_weight} × shapes-clip's caption-word loss on the pooled image embedding (free vectors for the 8
  colour and 6 shape words, dropped after training, predict which of them name the image: a direct shape signal for the
  image tower; a 3.5-minute trial without it named only 35 % of photo shapes and 28 % of drawing shapes).
{_pairs_line(cfg)}- optimiser: AdamW (β = 0.9, 0.98; wd {cfg.weight_decay}, none on gains/biases/batch-norm/
  embeddings), lr {cfg.lr}, {cfg.warmup} warm-up steps then cosine; gradient clip 1.0.
- steps: {steps_done} of {cfg.steps} × batch {cfg.batch_size}; final loss {final_loss:.3f}.
- wall time: {train_s / 60:.1f} min training + {pool_s:.0f} s drawing the pool, {cfg.threads} CPU
  thread{'s' if cfg.threads > 1 else ''} ({platform.processor() or platform.machine()}, 2 cores shared with
  other jobs; load average {os.getloadavg()[0]:.1f} at the end).

## Metrics (held-out stream {EVAL_SEED}, one object per scene, random sides 96–448 px, eval transform)

{rows}

"line drawings" are the world's default drawing style (60 % black ink, else the object's colour); "black line
drawings" the same scenes all in black ink — what a sketch looks like. Chance is 1/6. Measured by
`clipkit.training.judge_card.shape_accuracy` on the fp16 weights shipped here.

## Files

`open_clip_config.json` (model_cfg + preprocess_cfg), `open_clip_model.safetensors` (fp16), `clipkit.json`,
`train_log.json`. Load with clipkit's registry (`load_model("{cfg.name}")`) or
`open_clip.create_model_from_pretrained("local-dir:<this folder>")`.
"""


def tokenizer_of(cfg: TrainJudgeConfig):
    import open_clip

    return open_clip.get_tokenizer(cfg.name)


def build(out: str | Path, cfg: TrainJudgeConfig, *, command: str, evaluate: bool = True, quiet: bool = False,
          log: Callable[[str], None] | None = None, checkpoint_every: int = 0) -> dict:
    """Train ``cfg``, evaluate the fp16-rounded model, write the hub folder, model card and ``train_log.json``
    into ``out``. Returns the metrics ({} without ``evaluate``). ``checkpoint_every``: log a quick shape
    accuracy (60 scenes) every that many steps."""
    out = Path(out)
    log = log or (lambda s: None)
    t0 = time.perf_counter()

    def checkpoint(model, step: int) -> None:  # a quick look at the shape accuracy while training
        log(f"eval@{step}: " + json.dumps(shape_accuracy(model, tokenizer_of(cfg), eval_transform(size), n=60)))

    size = cfg.model_cfg["vision_cfg"]["image_size"]
    model, tokenizer, res, pool_s = train_judge(cfg, quiet=quiet, log=log, checkpoint=checkpoint,
                                                checkpoint_every=checkpoint_every)
    total_s = time.perf_counter() - t0
    metrics: dict = {}
    if evaluate:
        model = model.half().float()
        metrics = shape_accuracy(model, tokenizer, eval_transform(size))
        log("final: " + json.dumps(metrics))
    card = model_card(cfg, steps_done=res.steps, train_s=res.seconds, pool_s=pool_s, metrics=metrics or None,
                      command=command, final_loss=res.losses[-1])
    save_hub_folder(model, cfg.model_cfg, out, preprocess_cfg={**JUDGE_PREPROCESS, "size": size},
                    meta=meta_for(cfg), card=card)
    (out / "train_log.json").write_text(json.dumps(
        {"config": asdict(cfg), "steps": res.steps, "train_seconds": res.seconds, "pool_seconds": pool_s,
         "total_seconds": total_s, "losses": res.losses[::10], "final_loss": res.losses[-1],
         "metrics": metrics}, indent=1) + "\n")
    return metrics
