"""``clipkit eval ground DATA/``: grounding accuracy on a shapes-world export's referring.json (JSON)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none, model_options
from clipkit.cli.options import DeviceOpt, ModelOpt, OfflineOpt, PrecisionOpt, PretrainedOpt, QuietOpt, ThreadsOpt


def eval_ground(
    data: Annotated[Path, typer.Argument(help="Export folder (clipkit world export) with referring.json.")],
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Evaluate the first N images only.", show_default=False, min=1)] = None,
    context: Annotated[str | None, typer.Option(
        "--context", help="blur (default), grey or none.", show_default=False)] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help="image (default), fast, both or none.", show_default=False)] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    offline: OfflineOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = None,
) -> None:
    """Accuracy at IoU >= 0.5 of `clipkit ground` (one call per expression), overall and per expression type
    (plain, attribute, relation, superlative; absent: the rate of empty answers).

    Example:

      clipkit world export val/ --n 200 --seed 1 && clipkit eval ground val/
    """
    from rich.progress import Progress

    from clipkit.errors import UsageError
    from clipkit.evaluation.grounding import evaluate_grounding
    from clipkit.registry import load_model
    from clipkit.world.dataset import ExportError

    loaded = load_model(**model_options(model, pretrained, device, precision, offline, None, threads))
    try:
        with Progress(disable=bool(quiet), transient=True) as bar:
            task = bar.add_task("eval ground")
            scores = evaluate_grounding(data, loaded, limit=limit, progress=lambda k: bar.advance(task, k),
                                        **drop_none(context=context, region=region))
    except (ExportError, ValueError) as e:
        raise UsageError(str(e)) from None
    typer.echo(json.dumps({**scores, "model": loaded.name, "data": str(data)}))
