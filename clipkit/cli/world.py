"""`clipkit world …`: export the synthetic shapes world and train the bundled tiny CLIP.

Parses and formats only; the library (clipkit.world) owns every default. No torch import at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def _usage_error(msg: str) -> Exception:
    from clipkit.errors import UsageError

    return UsageError(msg)


def _parse_size(size: str) -> tuple[int | None, tuple[int, int] | None]:
    """"224" -> (224, None); "64:448" -> (None, (64, 448))."""
    try:
        if ":" in size:
            lo, hi = (int(v) for v in size.split(":", 1))
            if not 32 <= lo <= hi <= 2048:
                raise ValueError
            return None, (lo, hi)
        px = int(size)
        if not 32 <= px <= 2048:
            raise ValueError
        return px, None
    except ValueError:
        raise _usage_error(f"--size must be PX or LO:HI with 32 <= PX <= 2048, got {size!r}") from None


def export(
    out: Annotated[Path, typer.Argument(help="Output folder (created).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scenes.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (scene i is the same for any --n).")] = 0,
    size: Annotated[str, typer.Option("--size", help="Square side in px, or LO:HI for a random side per "
                                                     "scene.")] = "224",
    max_objects: Annotated[int, typer.Option("--max-objects", min=1, max=8,
                                             help="At most this many objects per scene.")] = 4,
    min_objects: Annotated[int, typer.Option("--min-objects", min=1, max=8,
                                             help="At least this many objects per scene.")] = 1,
    repeat_prob: Annotated[float, typer.Option("--repeat-prob", min=0.0, max=1.0,
                                               help="Share of scenes where objects repeat a shape or category "
                                                    "(relational and superlative expressions need them).")] = 0.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export in OUT (only its own "
                                                               "files are removed).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write N scenes as PNGs with COCO instances, captions, semantic masks and referring expressions."""
    from clipkit.runner import progress
    from clipkit.world.export import export as do_export

    if min_objects > max_objects:
        raise _usage_error(f"--min-objects {min_objects} exceeds --max-objects {max_objects}")
    px, rng = _parse_size(size)
    with progress(n, "generating scenes", quiet) as bar:
        folder = do_export(out, n=n, seed=seed, size=px or 224, size_range=rng, min_objects=min_objects,
                           max_objects=max_objects, progress=bar.advance, overwrite=overwrite,
                           repeat_prob=repeat_prob)
    typer.echo(f"wrote {n} scenes to {folder}", err=True)


def train_clip(
    out: Annotated[Path, typer.Argument(help="Output model folder (open_clip hub layout + model card).")],
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=2, help="Scenes per step.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    seed: Annotated[int | None, typer.Option("--seed",
                                             help="Seed of scenes, batches and initialisation.")] = None,
    pool_size: Annotated[int | None, typer.Option("--pool-size", min=1,
                                                  help="Scenes drawn once and sampled from.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes",
                                                      help="Stop early after this long.")] = None,
    evaluate: Annotated[bool, typer.Option("--eval/--no-eval",
                                           help="Measure the model-card metrics.")] = True,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0,
                                            help="Log quick metrics every N steps (multiple of 10).")] = 0,
    checkpoints: Annotated[Path | None, typer.Option("--checkpoints",
                                                    help="Save the --eval-every models here.")] = None,
    mil_weight: Annotated[float | None, typer.Option("--mil-weight", min=0.0,
                                                     help="Weight of the patch-level caption MIL loss "
                                                          "(0 = plain CLIP loss).")] = None,
    word_weight: Annotated[float | None, typer.Option("--word-weight", min=0.0,
                                                      help="Weight of the patch-level caption-word loss "
                                                           "(0 = off).")] = None,
    drawings: Annotated[float | None, typer.Option("--drawings", min=0.0, max=1.0,
                                                   help="Fraction of the pool drawn as line drawings "
                                                        "(clipkit.world.drawings), so sketches are named too.")] = None,
    partial_names: Annotated[float | None, typer.Option("--partial-names", min=0.0, max=1.0,
                                                        help="Chance a caption names an object by shape or "
                                                             "colour alone ('a circle', 'a red one').")] = None,
    pair_weight: Annotated[float | None, typer.Option("--pair-weight", min=0.0,
                                                      help="Weight of the photo–drawing activation loss "
                                                           "(clipkit.training.pairs; 0 = off).")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Start from this model folder (same "
                                                             "architecture), e.g. to continue a run.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a tiny open_clip model contrastively on shapes-world scenes (how shapes-clip was made)."""
    import shlex
    import sys

    from clipkit.training.clip import TrainClipConfig
    from clipkit.training.clip_card import build

    if init is not None and not (init / "open_clip_model.safetensors").is_file():
        raise _usage_error(f"--init {init}: no open_clip_model.safetensors there (give a train-clip output folder)")
    given = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "pool_size": pool_size,
             "threads": threads, "max_minutes": max_minutes, "mil_weight": mil_weight,
             "word_weight": word_weight, "drawings": drawings,
             "partial_names": partial_names, "pair_weight": pair_weight, "init": str(init) if init else None}
    cfg = TrainClipConfig(**{k: v for k, v in given.items() if v is not None})
    # the model card records the exact command line that made the model
    args = sys.argv[1:]
    rest = args[args.index("train-clip") + 1:] if "train-clip" in args else [str(out)]
    command = "clipkit world train-clip " + " ".join(shlex.quote(a) for a in rest)
    metrics = build(out, cfg, command=command, evaluate=evaluate, quiet=quiet,
                    log=lambda s: typer.echo(s, err=True), checkpoint_every=eval_every,
                    checkpoint_dir=checkpoints)
    if metrics:
        zs = metrics["zero_shot"]["zero_shot_top1"]
        dense = metrics["dense"]["dense_acc"]
        typer.echo(f"wrote {out}: zero-shot top-1 {zs:.3f}, dense patch–text accuracy "
                   + ", ".join(f"{k} {v:.3f}" for k, v in dense.items()), err=True)
    else:
        typer.echo(f"wrote {out}", err=True)


# the options of the two ResNet trainers (train-judge, train-sketch-model); unset = the config's default
_Out = Annotated[Path, typer.Argument(help="Output model folder (open_clip hub layout + model card).")]
_Steps = Annotated[int | None, typer.Option("--steps", min=1, help="Optimiser steps.")]
_Batch = Annotated[int | None, typer.Option("--batch-size", min=2, help="Scenes per step.")]
_Lr = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
_Seed = Annotated[int | None, typer.Option("--seed", help="Seed of scenes, batches and initialisation (keep it off "
                                                         "shapes-clip's 0-6).")]
_Pool = Annotated[int | None, typer.Option("--pool-size", min=1, help="Scenes drawn once and sampled from.")]
_Drawings = Annotated[float | None, typer.Option("--drawings", min=0.0, max=1.0,
                                                 help="Fraction of the pool drawn as line drawings.")]
_Threads = Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads.")]
_MaxMinutes = Annotated[float | None, typer.Option("--max-minutes", help="Stop early after this long.")]
_Eval = Annotated[bool, typer.Option("--eval/--no-eval", help="Measure the model-card metrics.")]
_EvalEvery = Annotated[int, typer.Option("--eval-every", min=0,
                                         help="Log a quick shape accuracy every N steps (multiple of 50).")]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def train_judge(out: _Out, steps: _Steps = None, batch_size: _Batch = None, lr: _Lr = None, seed: _Seed = None,
                pool_size: _Pool = None, drawings: _Drawings = None, threads: _Threads = None,
                max_minutes: _MaxMinutes = None, evaluate: _Eval = True, eval_every: _EvalEvery = 0,
                quiet: _Quiet = False) -> None:
    """Train the small ResNet CLIP that judges sketches (how shapes-judge was made).

    Example:

      clipkit world train-judge runs/shapes-judge --max-minutes 25
    """
    from clipkit.training.judge import TrainJudgeConfig

    _train_resnet("train-judge", TrainJudgeConfig, locals())


def train_sketch_model(
    out: _Out, steps: _Steps = None, batch_size: _Batch = None, lr: _Lr = None, seed: _Seed = None,
    pool_size: _Pool = None, drawings: _Drawings = None,
    pair_weight: Annotated[float | None, typer.Option(
        "--pair-weight", min=0.0, help="Weight of the photo–drawing activation loss at layer2/layer3.")] = None,
    edge_stem: Annotated[bool | None, typer.Option(
        "--edge-stem/--no-edge-stem", help="Fix the first convolution to oriented edge filters.",
        show_default=False)] = None,
    threads: _Threads = None, max_minutes: _MaxMinutes = None, evaluate: _Eval = True, eval_every: _EvalEvery = 0,
    quiet: _Quiet = False,
) -> None:
    """Train the small ResNet CLIP that `clipkit sketch` optimises against (how shapes-sketch was made).

    Defaults: clipkit.training.judge.sketch_model_config (96 px, edge stem, pairs at layer2/layer3).

    Example:

      clipkit world train-sketch-model runs/shapes-sketch
    """
    from clipkit.training.judge import sketch_model_config

    _train_resnet("train-sketch-model", sketch_model_config, locals())


def _train_resnet(name: str, config: Callable[..., Any], given: dict[str, Any]) -> None:
    """Train, evaluate and write a ResNet world CLIP: ``config(**options)`` with the command's options that were
    given (``given``: the command function's arguments; None = unset, the config's default)."""
    import shlex
    import sys

    from clipkit.training.judge_card import build

    fields = ("steps", "batch_size", "lr", "seed", "pool_size", "drawings", "pair_weight", "edge_stem", "threads",
              "max_minutes")
    cfg = config(**{k: given[k] for k in fields if given.get(k) is not None})
    out, quiet = given["out"], given["quiet"]
    args = sys.argv[1:]
    rest = args[args.index(name) + 1:] if name in args else [str(out)]
    command = f"clipkit world {name} " + " ".join(shlex.quote(a) for a in rest)
    metrics = build(out, cfg, command=command, evaluate=given["evaluate"], quiet=quiet,
                    log=lambda s: typer.echo(s, err=True), checkpoint_every=given["eval_every"])
    shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "n")
    typer.echo(f"wrote {out}" + (f": zero-shot shape top-1 {shown}" if metrics else ""), err=True)
