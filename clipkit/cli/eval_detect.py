"""``clipkit eval detect DATA/``: COCO box AP of detect on a shapes-world export (JSON on stdout)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none, model_options
from clipkit.cli.options import DeviceOpt, ModelOpt, OfflineOpt, PrecisionOpt, PretrainedOpt, QuietOpt, ThreadsOpt


def eval_detect(
    data: Annotated[Path, typer.Argument(help="Export folder (clipkit world export): instances.json + images/.")],
    path: Annotated[str | None, typer.Option(
        "--path", help="image, fast or ensemble (default: ensemble).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", help="Evaluate the first N images only.", show_default=False, min=1)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Lowest score kept for AP (default 0.01).", show_default=False)] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    offline: OfflineOpt = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = None,
) -> None:
    """COCO AP, AP50 and AP75 (pycocotools) of `clipkit detect` on an export; prints one JSON object.

    Example:

      clipkit world export val/ --n 200 --seed 1 && clipkit eval detect val/ --path fast
    """
    from rich.progress import Progress

    from clipkit.errors import UsageError
    from clipkit.evaluation.detection import evaluate_detection
    from clipkit.registry import load_model
    from clipkit.world.dataset import ExportError

    loaded = load_model(**model_options(model, pretrained, device, precision, offline, None, threads))
    try:
        with Progress(disable=bool(quiet), transient=True) as bar:
            task = bar.add_task("eval detect")
            scores = evaluate_detection(data, loaded, limit=limit, progress=lambda k: bar.advance(task, k),
                                        **drop_none(path=path, score_threshold=threshold))
    except ExportError as e:
        raise UsageError(str(e)) from None
    typer.echo(json.dumps({**scores, "model": loaded.name, "data": str(data)}))
