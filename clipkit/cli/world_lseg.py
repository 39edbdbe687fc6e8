"""``clipkit world train-lseg``: train an LSeg head for a frozen CLIP model on the shapes world."""

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none
from clipkit.cli.options import ModelOpt, QuietOpt, TemplatesOpt, ThreadsOpt


def train_lseg(
    out: Annotated[Path, typer.Argument(help="Folder for lseg_head.safetensors, lseg_config.json, README.md.",
                                        show_default=False)],
    model: ModelOpt = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimiser steps (default 600).",
                                                 show_default=False, min=1)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", help="Scenes per step (default 8).",
                                                      show_default=False, min=1)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="AdamW learning rate (default 1e-3).",
                                                show_default=False)] = None,
    features: Annotated[int | None, typer.Option("--features", help="Decoder width (default 32).",
                                                    show_default=False, min=8)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Initialisation and flip seed (default 0).",
                                                show_default=False)] = None,
    scene_seed: Annotated[int | None, typer.Option(
        "--scene-seed", help="Stream of training scenes (default 4242).", show_default=False)] = None,
    eval_scenes: Annotated[int | None, typer.Option(
        "--eval-scenes", help="Held-out scenes for the final mIoU (default 100).", show_default=False,
        min=1)] = None,
    init: Annotated[str | None, typer.Option(
        "--init", help="Continue this head (bundled name or folder) instead of a new one, e.g. after the CLIP "
                       "model was retrained.", show_default=False)] = None,
    templates: TemplatesOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = None,
) -> None:
    """Train LSeg's DPT-style head (pixel-wise cross-entropy over text-embedding logits) on generated scenes.

    Examples:

      clipkit world train-lseg clipkit/assets/lseg-shapes --steps 600

      clipkit world train-lseg /tmp/head --model shapes-clip --steps 50 --eval-scenes 20
    """
    from clipkit.training.lseg import LSegTrainConfig
    from clipkit.training.lseg import train_lseg as run

    cfg = LSegTrainConfig(**drop_none(model=model, steps=steps, batch_size=batch_size, lr=lr,
                                      features=features, seed=seed, scene_seed=scene_seed,
                                      eval_scenes=eval_scenes, templates=templates, threads=threads,
                                      init=init))
    command = "clipkit " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    metrics = run(cfg, out, quiet=bool(quiet), command=command)
    typer.echo(f"LSeg head written to {out}: held-out mIoU {metrics['miou']:.3f} "
               f"({metrics['scenes']} scenes, {metrics['ms_per_image']} ms/image)")
