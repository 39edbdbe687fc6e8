"""``clipkit segment``: open-vocabulary semantic segmentation (training-free dense CLIP or an LSeg head)."""

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
    ShiftsOpt,
    TemplatesOpt,
    ThreadsOpt,
    TrustOpt,
    WorkersOpt,
)

SEG = "Segmentation"


def segment(
    images: Inputs = None,
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = None,
    variant: Annotated[str | None, typer.Option(
        "--variant", "-v", help="Training-free dense CLIP: naclip, clearclip, sclip, maskclip or plain "
        "(default: plain for average-pooled towers such as shapes-clip, else naclip).",
        rich_help_panel=SEG, show_default=False)] = None,
    head: Annotated[str | None, typer.Option(
        "--head", help="A trained LSeg head: bundled name (lseg-shapes) or folder/.safetensors path.",
        rich_help_panel=SEG, show_default=False)] = None,
    background: Annotated[str | None, typer.Option(
        "--background", help="Comma-separated background prompts that map to 0 (default 'background'; "
        "'none' for no background class).", rich_help_panel=SEG, show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Pixels whose best class probability is below this become background.",
        rich_help_panel=SEG, show_default=False)] = None,
    min_cosine: MinCosineOpt = None,
    shifts: ShiftsOpt = None,
    stride: Annotated[int | None, typer.Option(
        "--stride", help="Sliding-window stride in pixels (default: half the model's input size).",
        rich_help_panel=SEG, show_default=False)] = None,
    short_side: Annotated[int | None, typer.Option(
        "--short-side", help="Resize the short side to this before sliding (default: the model's input "
        "size).",
        rich_help_panel=SEG, show_default=False)] = None,
    scores: Annotated[bool | None, typer.Option(
        "--scores", help="Also write per-class probabilities as DIR/<stem>.npz (float16).",
        rich_help_panel=SEG,
        show_default=False)] = None,
    rle: Annotated[bool | None, typer.Option(
        "--rle", help="Add COCO RLE masks per class to each JSON result.", rich_help_panel=SEG,
        show_default=False)] = None,
    overlay: Annotated[bool | None, typer.Option(
        "--overlay/--no-overlay", help="Write DIR/<stem>_overlay.png with a legend (default on).",
        rich_help_panel=SEG, show_default=False)] = None,
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
    """Segment images into free-text labels: a palette label PNG (0 = background, k = k-th label) per image.

    Examples:

      clipkit segment examples/scenes/ --labels "red circle,blue square" --out-dir out/

      clipkit segment scene.png -l "red circle,blue square" --head lseg-shapes -d out/ --scores

      clipkit segment photo.jpg -m ViT-B-16 -p openai -l cat,dog --variant sclip --background sky,wall
    """
    from clipkit.images import expand_inputs
    from clipkit.methods.segment import iter_segment
    from clipkit.prompts import parse_labels
    from clipkit.registry import load_model

    label_list = parse_labels(labels, labels_file)
    paths = expand_inputs(images or [], files_from)
    loaded = load_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint,
                                        threads))
    sink = open_sink(format, output, resume, title="segment")
    options = drop_none(templates=templates, variant=variant, head=head, background=background,
                        threshold=threshold, min_cosine=min_cosine, shifts=shifts, stride=stride,
                        short_side=short_side,
                        scores=scores, rle=rle,
                        overlay=overlay, out_dir=out_dir, workers=workers)
    results = iter_segment(paths, label_list, loaded, quiet=bool(quiet), skip=sink.done, **options)
    finish(write_results(results, sink))
