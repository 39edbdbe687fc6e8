"""``clipkit eval group``: mIoU, per-class IoU and group purity of ``clipkit group`` on a shapes-world export."""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none, iou_table, model_options, write_report
from clipkit.cli.group import (
    BgThreshOpt,
    GroupModelOpt,
    GroupsOpt,
    ShortSideOpt,
    StrideOpt,
    TopKOpt,
    VariantOpt,
    WindowOpt,
    parse_groups,
)
from clipkit.cli.options import (
    DeviceOpt,
    LabelsFileOpt,
    LabelsOpt,
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


def eval_group(
    data: Annotated[Path, typer.Argument(help="A dataset folder written by 'clipkit world export'.",
                                         show_default=False)],
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = None,
    bg_thresh: BgThreshOpt = None,
    top_k: TopKOpt = None,
    short_side: ShortSideOpt = None,
    window: WindowOpt = None,
    stride: StrideOpt = None,
    variant: VariantOpt = None,
    groups: GroupsOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N images.",
                                                 show_default=False, min=1)] = None,
    model: GroupModelOpt = None,
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
    """Measure GroupViT zero-shot segmentation (mIoU, background included) and group purity on a dataset.

    Labels default to every category name of the dataset.

    Examples:

      clipkit eval group data/val

      clipkit eval group data/val --format json --limit 100

      clipkit eval group data/val -m shapes-clip --groups 64,8
    """
    from clipkit.groupvit.evaluate import evaluate_group
    from clipkit.methods.group import load_group_model
    from clipkit.prompts import parse_labels

    fmt = format or ("table" if output is None and sys.stdout.isatty() else "json")
    if fmt not in ("table", "json"):
        raise UsageError("--format must be table or json")
    label_list = parse_labels(labels, labels_file) if (labels or labels_file) else None
    loaded = load_group_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint,
                                              threads))
    options = drop_none(templates=templates, topk=top_k, bg_thresh=bg_thresh,
                        short_side=short_side, window=window, stride=stride, variant=variant,
                        groups=parse_groups(groups))
    result = evaluate_group(data, loaded, labels=label_list, limit=limit, quiet=bool(quiet), **options)
    write_report(json.dumps(result, indent=2) + "\n" if fmt == "json" else _table(result), output)


def _table(result: dict) -> str:
    """Plain text: one row per class, then mIoU, purity and run facts."""
    width = max([len("pixel acc"), *(len(k) for k in result["per_class"])])
    extra = [f"{'purity ' + k:<{width}}  {v:.4f}" for k, v in result.get("purity", {}).items()]
    extra.append(f"{result['n_images']} images, {result['ms_per_image']} ms/image, {result['method']}, "
                 f"{result['model']}, bg_thresh {result['bg_thresh']}")
    return iou_table(result, extra)
