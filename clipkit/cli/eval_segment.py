"""``clipkit eval segment``: mIoU and per-class IoU of ``clipkit segment`` on a shapes-world export."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none, iou_table, model_options, write_report
from clipkit.cli.options import (
    DeviceOpt,
    LabelsFileOpt,
    LabelsOpt,
    ModelOpt,
    OfflineOpt,
    OutputOpt,
    PrecisionOpt,
    PretrainedOpt,
    QuietOpt,
    TemplatesOpt,
    ThreadsOpt,
    TrustOpt,
)
from clipkit.errors import UsageError

SEG = "Segmentation"


def eval_segment(
    data: Annotated[Path, typer.Argument(help="A dataset folder written by 'clipkit world export'.",
                                         show_default=False)],
    labels_from_data: Annotated[bool | None, typer.Option(
        "--labels-from-data", help="Segment with every category name of the dataset (the default when no "
        "--labels are given).", show_default=False)] = None,
    labels_per_image: Annotated[bool | None, typer.Option(
        "--labels-per-image", help="Segment each image with only the categories in its ground truth.",
        show_default=False)] = None,
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = None,
    variant: Annotated[str | None, typer.Option(
        "--variant", "-v", help="naclip, clearclip, sclip, maskclip or plain (default: plain for "
        "average-pooled towers such as shapes-clip, else naclip).", rich_help_panel=SEG,
        show_default=False)] = None,
    head: Annotated[str | None, typer.Option(
        "--head", help="Evaluate a trained LSeg head (bundled name or path) instead.", rich_help_panel=SEG,
        show_default=False)] = None,
    background: Annotated[str | None, typer.Option(
        "--background", help="Comma-separated background prompts ('none' for none).", rich_help_panel=SEG,
        show_default=False)] = None,
    min_cosine: Annotated[float | None, typer.Option(
        "--min-cosine", help="Best label cosine below which a pixel is background (default: the model's "
        "calibrated value, if any; -1 turns it off).", rich_help_panel=SEG, show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Probability below which a pixel is background.", rich_help_panel=SEG,
        show_default=False)] = None,
    stride: Annotated[int | None, typer.Option("--stride", help="Sliding-window stride in pixels.",
                                                  rich_help_panel=SEG, show_default=False)] = None,
    short_side: Annotated[int | None, typer.Option(
        "--short-side", help="Resize the short side to this before sliding.", rich_help_panel=SEG,
        show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N images.",
                                                 show_default=False, min=1)] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    offline: OfflineOpt = None,
    trust_checkpoint: TrustOpt = None,
    threads: ThreadsOpt = None,
    format: Annotated[str | None, typer.Option(
        "--format", "-f", help="table or json (default: table on a terminal, json when piped).",
        show_default=False)] = None,
    output: OutputOpt = None,
    quiet: QuietOpt = None,
) -> None:
    """Measure segmentation mIoU (background included) on a dataset in the shapes world's export format.

    Examples:

      clipkit eval segment data/val --labels-from-data

      clipkit eval segment data/val --head lseg-shapes --format json

      clipkit eval segment data/val --variant plain --limit 50
    """
    from clipkit.evaluation.segmentation import evaluate_segment
    from clipkit.prompts import parse_labels
    from clipkit.registry import load_model

    fmt = format or ("table" if output is None and sys.stdout.isatty() else "json")
    if fmt not in ("table", "json"):
        raise UsageError("--format must be table or json")
    label_list = parse_labels(labels, labels_file) if (labels or labels_file) else None
    if label_list and labels_from_data:
        raise UsageError("give either --labels/--labels-file or --labels-from-data, not both")
    loaded = load_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint,
                                        threads))
    options = drop_none(templates=templates, variant=variant, head=head, background=background,
                        threshold=threshold, min_cosine=min_cosine, stride=stride, short_side=short_side)
    result = evaluate_segment(data, loaded, labels=label_list, labels_per_image=bool(labels_per_image), limit=limit,
                              quiet=bool(quiet), **options)
    write_report(json.dumps(result, indent=2) + "\n" if fmt == "json" else _table(result), output)


def _table(result: dict) -> str:
    """A plain-text table: one row per class, then mIoU and run facts."""
    return iou_table(result, [f"{result['n_images']} images, {result['ms_per_image']} ms/image, "
                              f"{result['method']}, {result['model']}"])
