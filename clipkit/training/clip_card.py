"""Train, evaluate and write a shapes-world CLIP with its model card (`clipkit world train-clip`)."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from clipkit.training.clip import PREPROCESS_CFG, TrainClipConfig, save_hub_folder, train_clip
from clipkit.world.scenes import BACKGROUNDS, CATEGORIES, COLOURS, SHAPES

META = {"kind": "clip", "default_templates": "none"}


def eval_transform(size: int):
    """open_clip's eval transform for the bundled preprocess config (resize shortest side, centre crop)."""
    from open_clip.transform import image_transform

    return image_transform(size, is_train=False, mean=PREPROCESS_CFG["mean"], std=PREPROCESS_CFG["std"],
                           interpolation="bicubic", resize_mode="shortest")


def _fmt_metrics(m: dict) -> str:
    zs, rt, de = m["zero_shot"], m["retrieval"], m["dense"]
    rows = [
        "| metric | value | scenes |",
        "|---|---|---|",
        f"| zero-shot top-1, {len(CATEGORIES)} colour×shape classes, single object | "
        f"{zs['zero_shot_top1']:.3f} | {zs['n']} |",
        f"| colour-only accuracy (colour word of the top-1) | {zs['colour_acc']:.3f} | {zs['n']} |",
        f"| shape-only accuracy (shape word of the top-1) | {zs['shape_acc']:.3f} | {zs['n']} |",
        f"| caption retrieval R@1 image→text, 2 objects | {rt['i2t_r1']:.3f} | {rt['n']} |",
        f"| caption retrieval R@1 text→image, 2 objects | {rt['t2i_r1']:.3f} | {rt['n']} |",
    ]
    for name, acc in de["dense_acc"].items():
        rows.append(f"| dense patch–text accuracy, {name} patches, 2 objects | {acc:.3f} | {de['n']} |")
    return "\n".join(rows)


def model_card(cfg: TrainClipConfig, *, steps_done: int, train_s: float, pool_s: float, metrics: dict | None,
               command: str, final_loss: float) -> str:
    """The README.md of the model folder."""
    v, t = cfg.model_cfg["vision_cfg"], cfg.model_cfg["text_cfg"]
    grid = v["image_size"] // v["patch_size"]
    metrics_md = _fmt_metrics(metrics) if metrics else "(not evaluated: run with --eval)"
    init_md = "" if not cfg.init else (
        f"\n- initialised from `{cfg.init}` (the previous run of the Reproduce block): this run continues it"
        f" with a fresh pool\n  (stream seed {cfg.seed}) and a new warm-up + cosine schedule.")
    mil_md = "." if not cfg.mil_weight else (
        f", plus {cfg.mil_weight} × a multiple-instance loss on the patch tokens with the caption's labels:"
        f"\n  each of the {len(CATEGORIES)} bare labels scores `{cfg.mil_scale} · max over patches of cos(patch,"
        " label) + b` (b learned), trained with sigmoid BCE against which labels the caption names. Only"
        "\n  caption-level supervision (no masks or boxes): some patch must match each named object and no patch"
        "\n  an unnamed one, so a patch cannot blend two objects.")
    if cfg.word_weight:
        mil_md += (f"\n- plus {cfg.word_weight} × a caption-word loss: the best patch per colour/shape word "
                   "(free word vectors, dropped after training) predicts\n  which words the caption contains"
                   " (multi-label BCE, as SuperClass uses caption tokens as classes). It gives the image tower"
                   " a direct\n  signal for shape; without it both towers settled on colour only (shape words"
                   ' had no effect on the text: cos("red circle", "red square") = 0.9999 after 200 steps).')
    extra_md = ""
    if cfg.drawings:
        extra_md += (f"\n- line drawings: {cfg.drawings:.0%} of the pool drawn as outline sketches"
                     " (clipkit.world.drawings: varying width and wobble, black or coloured ink, plain paper),"
                     "\n  captioned by what they show (\"a star\" for black ink, \"a red star\" for red ink).")
    if cfg.partial_names:
        extra_md += (f"\n- partial names: each object is named by its shape alone (\"a circle\") or its colour"
                     f" alone (\"a red one\" / shape / object) with probability {cfg.partial_names}; a"
                     "\n  caption's positives are the scenes it fits (\"a circle\" fits every circle scene, not"
                     " the reverse).")
    if cfg.pair_weight:
        extra_md += (f"\n- photo–drawing pairs: plus {cfg.pair_weight} × clipkit.training.pairs.paired_drawing_loss"
                     " (each scene's line drawing pulled to its photo at blocks 2 and 3, scribbles over its"
                     "\n  objects kept e times farther).")
    return f"""# {cfg.name}

A tiny CLIP (open_clip ViT, {v['layers']}×{v['width']} vision, {t['layers']}×{t['width']} text,
{cfg.model_cfg['embed_dim']}-d joint space) trained from scratch on clipkit's synthetic **shapes world**, so
that every clipkit command can be run and measured without downloading weights. It knows
{len(CATEGORIES)} categories, "<colour> <shape>" over colours {', '.join(COLOURS)} and shapes
{', '.join(SHAPES)}, on {', '.join(BACKGROUNDS)} backgrounds. It knows nothing about real photographs.

Use bare labels (template set `none`): `clipkit classify scene.png --labels "red circle,blue star"`.

## Reproduce

```
{command}
```

Deterministic given the seed (same scenes, same batches, same initialisation); float results can differ in the
last digits across CPU types and thread counts.

## Training

- data: a pool of {cfg.pool_size} scenes (stream seed {cfg.seed}), drawn at {cfg.render_range[0]}–
  {cfg.render_range[1]} px and resized to {v['image_size']} px; objects per scene 1–{len(cfg.object_probs)}
  with probabilities {list(cfg.object_probs)}; random horizontal/vertical flips (relation words flipped
  to match).
- captions: every object named once; random order; with or without articles ("red circle and blue star" /
  "a red circle left of a blue star"); a spatial relation for 2-object scenes when unambiguous.{extra_md}
- loss: symmetric InfoNCE with multi-positive targets (scenes showing the same set of categories are
  positives of each other, since a batch of {cfg.batch_size} repeats them){mil_md}
- optimiser: AdamW (β = 0.9, 0.98; wd {cfg.weight_decay}, none on gains/biases/embeddings), lr {cfg.lr},
  {cfg.warmup} warm-up steps then cosine; gradient clip 1.0.
- steps: {steps_done} of {cfg.steps} × batch {cfg.batch_size}; final loss {final_loss:.3f}.{init_md}
- wall time: {train_s / 60:.1f} min training + {pool_s:.0f} s drawing the pool, {cfg.threads} CPU threads
  ({platform.processor() or platform.machine()}, shared machine).

## Design, and why

- `pool_type: "avg"`: the image embedding is the mean of the projected patch tokens, so every patch token is
  trained in the joint space and `ln_post(token) @ proj` is a usable dense embedding. With CLS pooling the
  patch tokens get no direct signal (a 500-step prototype was at chance on dense patch–text accuracy).
- {v['image_size']} px input, patch {v['patch_size']}: a {grid}×{grid} grid, so each object of a 4-object
  scene covers several patches.
- captions that bind colour to shape in multi-object scenes, so the text encoder must compose (a bag of
  colour and shape words cannot tell "red circle and blue star" from "blue circle and red star").
- `vocab_size` 49408 so the standard open_clip tokenizer works; `context_length` {t['context_length']} (the
  longest caption is under 24 tokens) to save compute.
- fp16 safetensors; the 49408-row token table is most of the file.

## Metrics (held-out scenes, streams disjoint from training)

{metrics_md}

Dense patch–text accuracy: for each object of a 2-object scene, the patch under the object's centre (its
visible pixel farthest from the edge) must score its own label above the other object's label (chance 0.5).
"plain" patches are `ln_post(last-layer tokens) @ proj`; the other rows are clipkit.dense's training-free
variants when available. Metrics from `clipkit.world.metrics.evaluate`.

## Files

`open_clip_config.json` (model_cfg + preprocess_cfg), `open_clip_model.safetensors` (fp16),
`clipkit.json` ({json.dumps(META)}). Load with clipkit's registry (`load_model("{cfg.name}")`) or
`open_clip.create_model_from_pretrained("local-dir:<this folder>")`.
"""


def build(out: str | Path, cfg: TrainClipConfig, *, command: str, evaluate: bool = True, quiet: bool = False,
          log: Callable[[str], None] | None = None, checkpoint_every: int = 0,
          checkpoint_dir: str | Path | None = None) -> dict:
    """Train ``cfg``, evaluate it, write the hub folder + model card + ``train_log.json`` (into ``out``).

    Returns the metrics dict (empty when ``evaluate`` is False). With ``checkpoint_every`` the intermediate
    model is evaluated on small held-out sets and the figures logged, and saved under ``checkpoint_dir``
    (``step<N>/``, hub layout) when given.
    """
    from clipkit.world import metrics as M

    out = Path(out)
    log = log or (lambda s: None)
    size = cfg.model_cfg["vision_cfg"]["image_size"]
    pre = eval_transform(size)

    def checkpoint(model, step: int) -> None:
        m = M.evaluate(model, tokenizer_ref[0], pre, n_zero_shot=96, n_pairs=50)
        log(f"eval@{step}: " + json.dumps(m))
        if checkpoint_dir is not None:
            save_hub_folder(model, cfg.model_cfg, Path(checkpoint_dir) / f"step{step}", meta=META)

    tokenizer_ref: list = []
    import open_clip

    from clipkit.training.clip import register_model_config

    register_model_config(cfg.name, cfg.model_cfg)
    tokenizer_ref.append(open_clip.get_tokenizer(cfg.name))
    t0 = time.perf_counter()
    model, tokenizer, res, pool_s = train_clip(cfg, quiet=quiet, log=log, checkpoint=checkpoint,
                                               checkpoint_every=checkpoint_every)
    total_s = time.perf_counter() - t0
    metrics: dict = {}
    if evaluate:
        # evaluate the fp16-rounded weights users will load
        model = model.half().float()
        metrics = M.evaluate(model, tokenizer, pre)
        log("final: " + json.dumps(metrics))
    if cfg.init and (Path(cfg.init) / "README.md").is_file():
        # a continued run: its card reproduces the whole chain, starting with the run it continued
        prev = _reproduce_block(Path(cfg.init) / "README.md")
        command = f"{prev}\n{command}"
    card = model_card(cfg, steps_done=res.steps, train_s=res.seconds, pool_s=pool_s,
                      metrics=metrics or None, command=command, final_loss=res.losses[-1])
    save_hub_folder(model, cfg.model_cfg, out, meta=META, card=card)
    (out / "train_log.json").write_text(json.dumps(
        {"config": asdict(cfg), "steps": res.steps, "train_seconds": res.seconds, "pool_seconds": pool_s,
         "total_seconds": total_s, "losses": res.losses[::10], "final_loss": res.losses[-1],
         "metrics": metrics}, indent=1) + "\n")
    return metrics


def _reproduce_block(readme: Path) -> str:
    """The command(s) in the "## Reproduce" block of a model card."""
    return readme.read_text().split("## Reproduce\n\n```\n", 1)[1].split("\n```", 1)[0]


def config_from_dict(d: dict) -> TrainClipConfig:
    """Inverse of ``dataclasses.asdict`` for :class:`TrainClipConfig` (JSON lists back to tuples)."""
    d = dict(d)
    for k in ("object_probs", "render_range"):
        if k in d:
            d[k] = tuple(d[k])
    return TrainClipConfig(**d)


def refresh_card(folder: str | Path, metrics: dict) -> None:
    """Rewrite ``folder``'s README.md and train_log.json with new ``metrics`` (e.g. after the dense variants
    became available), keeping the recorded config, steps, times and command."""
    folder = Path(folder)
    logd = json.loads((folder / "train_log.json").read_text())
    command = _reproduce_block(folder / "README.md")
    cfg = config_from_dict(logd["config"])
    card = model_card(cfg, steps_done=logd["steps"], train_s=logd["train_seconds"], pool_s=logd["pool_seconds"],
                      metrics=metrics, command=command, final_loss=logd.get("final_loss", logd["losses"][-1]))
    (folder / "README.md").write_text(card)
    logd["metrics"] = metrics
    (folder / "train_log.json").write_text(json.dumps(logd, indent=1) + "\n")
