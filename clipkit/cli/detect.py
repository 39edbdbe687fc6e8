"""``clipkit detect``: ViLD-style open-vocabulary detection (parsing and formatting only)."""

from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none, finish, model_options, open_sink, write_results
from clipkit.cli.options import (
    DeviceOpt,
    FilesFromOpt,
    FormatOpt,
    Inputs,
    LabelsFileOpt,
    LabelsOpt,
    MinCosineOpt,
    ModelOpt,
    OfflineOpt,
    OutDirOpt,
    OutputOpt,
    PrecisionOpt,
    PretrainedOpt,
    QuietOpt,
    ResumeOpt,
    SelectiveSearchOpt,
    ShiftsOpt,
    TemplatesOpt,
    ThreadsOpt,
    TrustOpt,
    WorkersOpt,
)

DETECT = "Detection"


def detect(
    images: Inputs = None,
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = None,
    path: Annotated[str | None, typer.Option(
        "--path", help="Region embeddings: image (CLIP on 1x + 1.5x crops), fast (RoIAlign over dense patch "
        "embeddings, one forward pass) or ensemble (ViLD geometric mean, weight 2/3 on image). "
        "Default: ensemble.", rich_help_panel=DETECT, show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Minimum score of a detection (default 0.3).", rich_help_panel=DETECT,
        show_default=False)] = None,
    max_detections: Annotated[int | None, typer.Option(
        "--max-detections", help="At most this many boxes per image (default 100).", rich_help_panel=DETECT,
        show_default=False, min=1)] = None,
    nms: Annotated[float | None, typer.Option(
        "--nms", help="Per-class NMS IoU (default 0.5, ViLD).", rich_help_panel=DETECT, show_default=False)] = None,
    background: Annotated[str | None, typer.Option(
        "--background", help="Background prompt(s), ';'-separated (default 'background'); a box whose best "
        "class is background is dropped.", rich_help_panel=DETECT, show_default=False)] = None,
    selective_search: SelectiveSearchOpt = None,
    min_cosine: MinCosineOpt = None,
    shifts: ShiftsOpt = None,
    max_proposals: Annotated[int | None, typer.Option(
        "--max-proposals", help="Cap on class-agnostic proposals per image (default 300).",
        rich_help_panel=DETECT, show_default=False, min=1)] = None,
    coco: Annotated[Path | None, typer.Option(
        "--coco", help="Also write COCO results JSON (image_id, category_id, bbox XYWH, score) to this file.",
        rich_help_panel=DETECT, show_default=False)] = None,
    coco_categories: Annotated[Path | None, typer.Option(
        "--coco-categories", help="COCO instances.json whose categories (name -> id) and images (file name -> "
        "id) --coco uses; default: labels numbered from 1, images in input order.", rich_help_panel=DETECT,
        show_default=False)] = None,
    out_dir: OutDirOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    offline: OfflineOpt = None,
    trust_checkpoint: TrustOpt = None,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    files_from: FilesFromOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    resume: ResumeOpt = None,
    quiet: QuietOpt = None,
) -> None:
    """Find and box free-text labels in images (ViLD on any CLIP: proposals, region embeddings, background).

    Examples:

      clipkit detect examples/scenes/ --labels "red circle,blue square,green triangle"

      clipkit detect scene.png -l "red circle,blue star" --path fast --out-dir boxes/

      clipkit detect data/images/ --labels-file names.txt --coco dets.json --coco-categories data/instances.json
    """
    from clipkit.draw import BoxArtefacts
    from clipkit.images import expand_inputs
    from clipkit.methods.detect import iter_detect
    from clipkit.prompts import parse_labels
    from clipkit.registry import load_model

    label_list = parse_labels(labels, labels_file)
    paths = expand_inputs(images or [], files_from)
    outputs = BoxArtefacts(label_list, out_dir=out_dir, coco=coco, coco_categories=coco_categories)
    loaded = load_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint, threads))
    sink = open_sink(format, output, resume, title="detect")
    proposals = drop_none(max_proposals=max_proposals)
    options = drop_none(templates=templates, path=path, score_threshold=threshold, max_detections=max_detections,
                        nms_iou=nms, background=background, selective_search=selective_search,
                        min_cosine=min_cosine, workers=workers)
    if proposals:
        options["proposals"] = proposals
    if shifts is not None:
        options["regions"] = {"dense_shifts": shifts}
    results = iter_detect(paths, label_list, loaded, quiet=bool(quiet), skip=sink.done, **options)
    code = write_results(outputs.tap(results), sink)
    outputs.close()
    finish(code)
