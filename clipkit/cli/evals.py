"""``clipkit eval …``: a method measured on a dataset in the shapes world's export format.

Each eval command takes the same options as its method (built from the same config, :mod:`clipkit.cli.factory`),
the shared model options, ``--limit``, and prints a report: a table on a terminal, JSON when piped or with
``--format json``; ``--output FILE`` writes it atomically.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clipkit.cli import options as o
from clipkit.cli.factory import SHARED, TEXT, config_parameters, model_option_for
from clipkit.methods import METHODS

DataArg = Annotated[Path, typer.Argument(help="A dataset folder written by 'clipkit world export'.",
                                         show_default=False)]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N images.", min=1,
                                              show_default=False)]
ReportFormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", help="table or json (default: table on a terminal, json when piped).", show_default=False)]
LabelsFromDataOpt = Annotated[bool | None, typer.Option(
    "--labels-from-data", help="Segment with every category name of the dataset (the default without --labels).",
    show_default=False)]
LabelsPerImageOpt = Annotated[bool | None, typer.Option(
    "--labels-per-image", help="Segment each image with only the categories in its ground truth.",
    show_default=False)]

# method → (evaluation function, extra options, summary, examples)
EVALS: dict[str, tuple[str, list[tuple[str, Any]], str, tuple[str, ...]]] = {
    "segment": ("clipkit.evaluation.segmentation:evaluate_segment",
                [("labels_from_data", LabelsFromDataOpt), ("labels_per_image", LabelsPerImageOpt)],
                "Measure segmentation mIoU (background included) on a dataset.",
                ("clipkit eval segment data/val --labels-from-data",
                 "clipkit eval segment data/val --head lseg-shapes --format json")),
    "group": ("clipkit.evaluation.grouping:evaluate_group", [],
              "Measure GroupViT zero-shot segmentation (mIoU, background included) and group purity.",
              ("clipkit eval group data/val", "clipkit eval group data/val -m shapes-clip --groups 64,8")),
    "detect": ("clipkit.evaluation.detection:evaluate_detection", [],
               "COCO AP, AP50 and AP75 (pycocotools) of `clipkit detect` (threshold 0.01 unless set).",
               ("clipkit world export val/ --n 200 --seed 1 && clipkit eval detect val/ --path fast",)),
    "ground": ("clipkit.evaluation.grounding:evaluate_grounding", [],
               "Accuracy at IoU >= 0.5 of `clipkit ground` (one call per expression), overall and per expression type.",
               ("clipkit world export val/ --n 200 --seed 1 && clipkit eval ground val/",)),
}


def eval_command(method: str) -> Any:
    """The Typer command function of ``clipkit eval METHOD``."""
    spec = METHODS[method]
    _, extra, summary, examples = EVALS[method]
    skip = {"coco", "coco_categories", "scores", "rle", "overlay"}  # picture/side-file options of the method
    params = [("data", DataArg), *(TEXT[spec.text] if spec.text == "labels" else []), *extra,
              *[(n, a) for n, a in config_parameters(spec) if n not in skip], ("limit", LimitOpt),
              ("model", model_option_for(spec)),
              *[(n, a) for n, a in SHARED if n in ("pretrained", "device", "precision", "offline",
                                                   "trust_checkpoint", "threads", "quiet")],
              ("format", ReportFormatOpt), ("output", o.OutputOpt)]

    def command(**kwargs: Any) -> None:
        _run_eval(method, kwargs)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a,
                           default=inspect.Parameter.empty if n == "data" else None) for n, a in params])
    command.__annotations__ = {}
    command.__doc__ = summary + "\n\nExamples:\n\n" + "\n\n".join(f"  {e}" for e in examples)
    return command


def _run_eval(method: str, kw: dict[str, Any]) -> None:
    from importlib import import_module

    from clipkit.cli.run import checked_config
    from clipkit.errors import UsageError
    from clipkit.prompts import parse_labels

    spec = METHODS[method]
    data, limit, fmt, output, quiet = (kw.pop(k) for k in ("data", "limit", "format", "output", "quiet"))
    model = {k: kw.pop(k) for k in ("model", "pretrained", "device", "precision", "offline", "trust_checkpoint")}
    threads = kw.pop("threads")
    extra: dict[str, Any] = {}
    if spec.text == "labels":
        labels, labels_file = kw.pop("labels"), kw.pop("labels_file")
        if labels or labels_file:
            extra["labels"] = parse_labels(labels, labels_file)
    if method == "segment":
        if kw.pop("labels_from_data") and "labels" in extra:
            raise UsageError("give either --labels/--labels-file or --labels-from-data, not both")
        extra["labels_per_image"] = bool(kw.pop("labels_per_image"))
    config = checked_config(spec, kw, model)
    fmt = fmt or ("table" if output is None and sys.stdout.isatty() else "json")
    if fmt not in ("table", "json"):
        raise UsageError("--format must be table or json")
    if output is not None and Path(output).is_dir():
        raise UsageError(f"--output {output} is a folder: name a file")
    if not Path(data).is_dir():
        raise UsageError(f"{data} is not a folder (a dataset written by 'clipkit world export')")

    from clipkit.api import load_for
    from clipkit.world.dataset import ExportError

    if threads is not None:
        from clipkit.device import set_threads

        set_threads(threads)
    loaded = load_for(spec, model.pop("model"), **model)
    module, _, name = EVALS[method][0].partition(":")
    try:
        result = getattr(import_module(module), name)(data, loaded, config, limit=limit, quiet=bool(quiet),
                                                      **extra)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    result = {**result, "model": getattr(loaded, "name", ""), "data": str(data)}
    text = json.dumps(result, indent=2) + "\n" if fmt == "json" else _table(result)
    if output is not None:
        from clipkit.writers import atomic_write_text

        atomic_write_text(output, text)
    else:
        typer.echo(text, nl=False)


def _table(result: dict[str, Any]) -> str:
    """Plain text: per-class IoU rows then mIoU (segment, group), or one ``key  value`` row per figure."""
    if "per_class" not in result:
        width = max(len(k) for k in result)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in result.items()) + "\n"
    rows = sorted(result["per_class"].items(), key=lambda kv: kv[0] != "background")
    width = max([len("pixel acc"), *(len(k) for k, _ in rows)])
    lines = [f"{'class':<{width}}  IoU", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {iou:.4f}" for name, iou in rows]
    lines += [f"{'-' * width}  ------", f"{'mIoU':<{width}}  {result['miou']:.4f}",
              f"{'pixel acc':<{width}}  {result['pixel_accuracy']:.4f}"]
    lines += [f"{'purity ' + k:<{width}}  {v:.4f}" for k, v in result.get("purity", {}).items()]
    lines.append(f"{result['n_images']} images, {result['ms_per_image']} ms/image, {result['method']}, "
                 f"{result['model']}")
    return "\n".join(lines) + "\n"
