"""``clipkit world train-groupvit``: train the tiny GroupViT of the shapes world from image–caption pairs only."""

from pathlib import Path
from typing import Annotated

import typer


def train_groupvit(
    out: Annotated[Path, typer.Argument(help="Output model folder (Hugging Face GroupViT layout + model card).")],
    scenes: Annotated[int | None, typer.Option("--scenes", min=16, help="Training scenes drawn once.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps (schedule length).")] = None,
    minutes: Annotated[float | None, typer.Option(
        "--minutes", help="Time budget: training stops (annealed) after this many minutes.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=2, help="Scenes per step.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    image_size: Annotated[int | None, typer.Option(
        "--image-size", help="Training resolution (patch 8); with --init: continue at this size (positions "
        "resized).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Scene stream of the training set.")] = None,
    init: Annotated[Path | None, typer.Option(
        "--init", help="Continue from this GroupViT folder (a previous run) instead of random weights.")] = None,
    init_clip: Annotated[str | None, typer.Option(
        "--init-clip", help="Warm start from an open_clip ViT: a hub folder (open_clip_config.json + "
        "open_clip_model.safetensors) or 'shapes-clip'. Copies patch embedding, positions, stage-1 blocks and "
        "the text tower (see docs/group.md).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    group_loss: Annotated[float | None, typer.Option(
        "--group-loss", min=0.0, help="Weight of clipkit's group-level noun loss (0 = official losses only).")] = None,
    freeze_grouping: Annotated[bool | None, typer.Option(
        "--freeze-grouping/--no-freeze-grouping", help="Train only what names the groups, not what forms them "
        "(use with --init; docs/group.md).")] = None,
    freeze_stages: Annotated[int | None, typer.Option(
        "--freeze-stages", min=1, help="Freeze only the first K stages' grouping; later stages regroup "
        "(use with --init; docs/group.md).")] = None,
    scene_size: Annotated[int | None, typer.Option(
        "--scene-size", min=16, help="Generate the scenes at this size and resize them to --image-size "
        "(bicubic, as inference does; default: the image size).")] = None,
    group_flat: Annotated[float | None, typer.Option(
        "--group-flat", min=0.0, help="Weight of the unclaimed-group flatness term (docs/group.md; 0 = off).")] = None,
    keep_every: Annotated[int | None, typer.Option(
        "--keep-every", min=0, help="Also keep a checkpoint every N steps in OUT/ckpt-NNNNNN.")] = None,
    evaluate: Annotated[bool, typer.Option(
        "--eval/--no-eval", help="Calibrate the background threshold on validation scenes (seed 2) and "
        "measure held-out mIoU and purity (seed 0) for the model card.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No log lines on stderr.")] = False,
) -> None:
    """Train a tiny GroupViT on shapes-world image–caption pairs (no masks): how shapes-groupvit was made.

    Examples:

      clipkit world train-groupvit runs/shapes-groupvit --minutes 20

      clipkit world train-groupvit runs/more --init runs/shapes-groupvit --minutes 10

      clipkit world train-groupvit runs/warm --init-clip shapes-clip --steps 3000 --minutes 240
    """
    import shlex
    import sys

    from clipkit.training.groupvit import TrainOptions, train
    from clipkit.training.groupvit_card import finish_model

    given = {"scenes": scenes, "steps": steps, "minutes": minutes, "batch_size": batch_size, "lr": lr,
             "image_size": image_size, "seed": seed, "threads": threads, "group_loss": group_loss,
             "keep_every": keep_every, "freeze_grouping": freeze_grouping,
             "freeze_stages": freeze_stages, "scene_size": scene_size,
             "group_flat": group_flat,
             "init": str(init) if init is not None else None, "init_clip": init_clip}
    opts = TrainOptions(out=str(out), **{k: v for k, v in given.items() if v is not None})
    args = sys.argv[1:]
    rest = args[args.index("train-groupvit") + 1:] if "train-groupvit" in args else [str(out)]
    command = "clipkit world train-groupvit " + " ".join(shlex.quote(a) for a in rest)

    def log(line: str) -> None:
        if not quiet:
            typer.echo(line, err=True)

    folder = train(opts, log=log)
    metrics = finish_model(folder, command=command, evaluate=evaluate, log=log)
    if metrics:
        typer.echo(f"wrote {folder}: held-out mIoU {metrics['test']['miou']:.3f}, stage-2 purity "
                   f"{metrics['test']['purity']['stage2']:.3f}", err=True)
    else:
        typer.echo(f"wrote {folder}", err=True)
