"""Does a judge model recognise the shape in a CLIPasso sketch? (The CLIPasso paper's recognition test.)

For ``--scenes`` held-out one-object shapes-world scenes (stream ``--seed``, disjoint from the training streams of
every bundled model: shapes-clip 0-6, shapes-judge 4242, shapes-sketch 5151), sketch the image with the loss model
(``--model``, default ``clipkit sketch``'s: the bundled ResNet shapes-sketch, saliency from the ViT shapes-clip, as
CLIPasso pairs an RN101 loss with ViT saliency), then classify the finished sketch — the PNG a user gets, grey ink
on white, through the judge's own preprocessing — among the six shape names ("circle", "square", ...; colour-
agnostic, since a black sketch has no colour) with the judge (``--judge``, default the bundled ResNet shapes-judge,
trained independently on photos and line drawings), zero-shot with the judge's default templates (both bundled
models: ``none``, i.e. the bare shape name as the prompt). Reported next to it, with the same judge: the original
images (the ceiling), the world's own black line drawing of the same scene, the initial strokes and random strokes
(same count and length, start points uniform); chance is 1/6.

The schedule is the loss model's own (``clipkit.clipasso.prepare.model_schedule``: both bundled CLIPs ship
``sketch_schedule`` in their clipkit.json) unless ``--iterations`` / ``--seeds`` are given.

    PYTHONPATH=. nice -n 10 python bench/sketch_recognition.py --scenes 24 --threads 1 \\
        --out-dir /tmp/sketch-rec --sheet docs/img/sketch_contact.png

Prints one line per scene and a Markdown table; ``--out-dir`` keeps every original and sketch PNG, ``--sheet``
writes a contact sheet (original | world drawing | initial strokes | sketch, one row per scene, the judge's
answer under each).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from clipkit.clipasso import SketchConfig, sketch_image
from clipkit.clipasso.init import random_walk_strokes
from clipkit.clipasso.optimize import initial_strokes, prepare_target, start_distribution, target_tensor
from clipkit.clipasso.prepare import model_schedule, saliency_model_for
from clipkit.prompts import text_embeddings
from clipkit.registry import load_model
from clipkit.render import get_renderer
from clipkit.world.drawings import DrawingStyle
from clipkit.world.scenes import SHAPES, SceneConfig, generate_scene

KINDS = ("original image", "world line drawing", "random strokes", "initial strokes", "CLIPasso sketch")


def strokes_png(points: np.ndarray, width: float, canvas: int) -> Image.Image:
    """Strokes [N, 4, 2] rendered as the command writes them: 8-bit grey, white paper, as RGB."""
    with torch.no_grad():
        alpha = get_renderer("torch").render(torch.from_numpy(points), width, canvas, canvas).numpy()
    return Image.fromarray(((1.0 - np.clip(alpha, 0, 1)) * 255.0 + 0.5).astype(np.uint8), "L").convert("RGB")


def classify(judge, text: torch.Tensor, image: Image.Image) -> int:
    """Index of the judge's zero-shot top-1 label for a PIL image (its own preprocessing)."""
    x = judge.preprocess(image.convert("RGB")).unsqueeze(0)
    return int((judge.encode_image(x) @ text.T).argmax())


def contact_sheet(rows: list[tuple[list[Image.Image], list[str]]], cell: int = 112) -> Image.Image:
    """One row per scene of captioned cells."""
    pad = 14
    cols = max(len(r[0]) for r in rows)
    sheet = Image.new("RGB", (cols * cell, len(rows) * (cell + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, captions) in enumerate(rows):
        for c, (img, cap) in enumerate(zip(images, captions, strict=True)):
            sheet.paste(img.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (c * cell, r * (cell + pad)))
            draw.text((c * cell + 3, r * (cell + pad) + cell), cap, fill=(0, 0, 0))
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shapes-sketch",
                    help="loss model: bundled name or a folder (default: `clipkit sketch`'s, shapes-sketch)")
    ap.add_argument("--judge", default="shapes-judge", help="judge model (bundled name or folder)")
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--first", type=int, default=0,
                    help="index of the first scene (split a run over processes: --first 12 --scenes 12)")
    ap.add_argument("--iterations", type=int, default=None, help="default: the loss model's schedule")
    ap.add_argument("--seeds", type=int, default=None, help="default: the loss model's schedule")
    ap.add_argument("--strokes", type=int, default=16)
    ap.add_argument("--canvas", type=int, default=224)
    ap.add_argument("--mask-object", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the original and sketch PNGs here")
    ap.add_argument("--sheet", type=Path, default=None, help="write a contact sheet PNG here")
    ap.add_argument("--sheet-rows", type=int, default=8)
    ap.add_argument("--reuse-sketches", type=Path, default=None,
                    help="judge the scene_NNN_sketch.png an earlier run wrote to its --out-dir (same scenes, "
                         "options and loss model) instead of sketching again (untimed); scenes without one are "
                         "sketched (e.g. to extend a run to more scenes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu")
    judge = load_model(args.judge, device="cpu")
    text = text_embeddings(judge, list(SHAPES))
    given = {"iterations": args.iterations, "seeds": args.seeds}
    opts = model_schedule(SketchConfig(canvas=args.canvas, strokes=args.strokes, mask_object=args.mask_object,
                                       renderer="torch", **{k: v for k, v in given.items() if v is not None}),
                          loaded)
    saliency = saliency_model_for(loaded, opts.saliency_model)
    hits = dict.fromkeys(KINDS, 0)
    answers: dict[str, Counter] = {k: Counter() for k in KINDS}
    per_shape: dict[str, Counter] = {k: Counter() for k in KINDS}  # hits per true shape
    seconds, cpu, iterations, rows = [], [], [], []
    load_before = os.getloadavg()
    black = DrawingStyle(p_black=1.0)
    cfg = SceneConfig(size=(224, 224), max_objects=1)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(args.first, args.first + args.scenes):
        scene = generate_scene(args.seed, i, cfg)
        truth = SHAPES.index(scene.objects[0].shape)
        prepared, _ = prepare_target(scene.image, opts)
        target = target_tensor(prepared, opts.canvas)
        rng = np.random.default_rng(i)
        random = random_walk_strokes(rng.random((opts.strokes, 2)), (opts.canvas,) * 2, rng)
        init = initial_strokes(start_distribution(loaded, target, opts, saliency), opts, opts.seed)
        earlier = args.reuse_sketches / f"scene_{i:03d}_sketch.png" if args.reuse_sketches else None
        if earlier is not None and earlier.is_file():  # an earlier run's PNG of this scene: judged again, untimed
            sketch, took = Image.open(earlier).convert("RGB"), "reused"
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            out = sketch_image(scene.image, loaded, opts, saliency_model=saliency)
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # at 1 thread ≈ the wall time on an idle core
            iterations.append(out.iterations)
            sketch = strokes_png(out.points, opts.width, opts.canvas)
            took = f"{seconds[-1]:.1f} s wall, {cpu[-1]:.1f} s CPU, {out.iterations} it"
        images = {
            "original image": scene.image,
            "world line drawing": generate_scene(args.seed, i, cfg, drawing=black).image,
            "random strokes": strokes_png(random, opts.width, opts.canvas),
            "initial strokes": strokes_png(init, opts.width, opts.canvas),
            "CLIPasso sketch": sketch,
        }
        guesses = {k: classify(judge, text, im) for k, im in images.items()}
        for k, g in guesses.items():
            hits[k] += int(g == truth)
            answers[k][SHAPES[g]] += 1
            per_shape[k][SHAPES[truth]] += int(g == truth)
        if args.out_dir and took != "reused":
            images["original image"].save(args.out_dir / f"scene_{i:03d}.png")
            images["CLIPasso sketch"].save(args.out_dir / f"scene_{i:03d}_sketch.png")
        if len(rows) < args.sheet_rows:
            shown = ("original image", "world line drawing", "initial strokes", "CLIPasso sketch")
            rows.append(([images[k] for k in shown], [f"{'ok' if guesses[k] == truth else 'x'} {SHAPES[guesses[k]]}"
                                                      for k in shown]))
        print(f"scene {i}: {scene.objects[0].shape:8s} → " + " / ".join(SHAPES[g] for g in guesses.values())
              + f" ({took})", flush=True)
    n = args.scenes
    load_after = os.getloadavg()
    print(f"\n{n} one-object scenes (seed {args.seed}, from {args.first}), loss model {loaded.name}, judge "
          f"{judge.name}, canvas {opts.canvas}, {opts.strokes} strokes, ≤{opts.iterations} it × {opts.seeds} "
          f"seed(s), mask_object {opts.mask_object}, threads {torch.get_num_threads()}, judge prompts: templates "
          f"{judge.default_templates!r} over {', '.join(SHAPES)}; load average before {load_before[0]:.1f}, "
          f"after {load_after[0]:.1f} (1 min)")
    truths = Counter(generate_scene(args.seed, i, cfg).objects[0].shape for i in range(args.first, args.first + n))
    print(f"| input to the judge ({judge.name}) | top-1 (of 6 shapes) | mean per-shape recall | the judge's answers |")
    print("|---|---|---|---|")
    for name, k in hits.items():
        said = ", ".join(f"{label} {c}" for label, c in answers[name].most_common())
        recall = np.mean([per_shape[name][s] / c for s, c in truths.items()])
        print(f"| {name} | {k}/{n} = {k / n:.0%} | {recall:.0%} | {said} |")
    print(f"| (chance) | 17% | 17% | truth: {', '.join(f'{s} {c}' for s, c in truths.most_common())} |")
    if seconds:
        print(f"\nper sketch ({len(seconds)} sketched in this run): wall mean {np.mean(seconds):.1f} s, "
              f"median {np.median(seconds):.1f} s, "
              f"max {np.max(seconds):.1f} s; CPU time mean {np.mean(cpu):.1f} s, max {np.max(cpu):.1f} s; "
              f"mean iterations of the kept seed {np.mean(iterations):.0f}")
    if args.sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(rows).save(args.sheet, optimize=True)
        print(f"contact sheet: {args.sheet} ({args.sheet.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
