"""``clipkit group``: GroupViT zero-shot segmentation with per-stage group maps (any open_clip model: fallback)."""

from typing import Annotated

import typer

from clipkit.cli.common import drop_none, finish, open_sink, write_results
from clipkit.cli.options import (
    DeviceOpt,
    FilesFromOpt,
    FormatOpt,
    Inputs,
    LabelsFileOpt,
    LabelsOpt,
    OfflineOpt,
    OutDirOpt,
    OutputOpt,
    PrecisionOpt,
    PretrainedOpt,
    QuietOpt,
    ResumeOpt,
    TemplatesOpt,
    ThreadsOpt,
    TrustOpt,
    WorkersOpt,
)

GRP = "Grouping"

GroupModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="A GroupViT: bundled name, Hugging Face GroupViT folder (config.json + "
    "model.safetensors) or NVlabs .pth; or any open_clip model (bundled name, architecture such as "
    "ViT-B-16:openai, hf-hub:org/repo, folder) for training-free grouping. Default: shapes-groupvit.",
    rich_help_panel="Model", show_default=False)]

BgThreshOpt = Annotated[str | None, typer.Option(
    "--bg-thresh", help="Background where a pixel's best label score is below this (0..1), or 'none' for no "
    "background. Default: the model's calibrated value (shapes-groupvit), else the official 0.95.",
    rich_help_panel=GRP, show_default=False)]
TopKOpt = Annotated[int | None, typer.Option(
    "--top-k", "-k", help="Only the image's k best labels may name a group. Default: the model's calibrated "
    "value (shapes-groupvit), else the official 5.", rich_help_panel=GRP, show_default=False)]
WindowOpt = Annotated[int | None, typer.Option(
    "--window", help="GroupViT only: the official evaluation's sliding-window mode, square windows of this "
    "many pixels (after --short-side), each segmented on its own, scores averaged. Default: off.",
    rich_help_panel=GRP, show_default=False)]
StrideOpt = Annotated[int | None, typer.Option(
    "--stride", help="Sliding-window step in pixels (default: half the window, as the official 448/224).",
    rich_help_panel=GRP, show_default=False)]
ShortSideOpt = Annotated[int | None, typer.Option(
    "--short-side", help="Resize the short side to this before the model (default: its training size).",
    rich_help_panel=GRP, show_default=False)]
VariantOpt = Annotated[str | None, typer.Option(
    "--variant", "-v", help="Fallback for open_clip models only: dense embedding variant (naclip, clearclip, "
    "sclip, maskclip, plain; default: plain for average-pooled towers such as shapes-clip, else naclip).",
    rich_help_panel=GRP, show_default=False)]
GroupsOpt = Annotated[str | None, typer.Option(
    "--groups", help="Fallback only: groups of the two stages, e.g. 64,8 (default).", rich_help_panel=GRP,
    show_default=False)]


def parse_groups(value: str | None) -> tuple[int, ...] | None:
    from clipkit.errors import UsageError

    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--groups must be two integers such as 64,8, not {value!r}") from None


def group(
    images: Inputs = None,
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
    overlay: Annotated[bool | None, typer.Option(
        "--overlay/--no-overlay", help="Write DIR/<stem>_overlay.png with a legend (default on).",
        rich_help_panel=GRP, show_default=False)] = None,
    out_dir: OutDirOpt = None,
    model: GroupModelOpt = None,
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
    """Group pixels into segments with GroupViT and name them with free-text labels.

    Writes DIR/<stem>.png (palette labels, 0 = background, k = k-th label), <stem>_overlay.png and the group maps
    <stem>_stage1.png / <stem>_stage2.png. Default model: the bundled shapes-groupvit; --model also takes a
    Hugging Face GroupViT folder (nvidia/groupvit-gcc-yfcc layout), an NVlabs .pth, or any open_clip model
    (training-free grouping of its dense patch embeddings).

    Examples:

      clipkit group examples/scenes/ --labels "red circle,blue square,green triangle" --out-dir out/

      clipkit group photo.jpg -m ./groupvit-gcc-yfcc -l "cat,dog,grass,sky" -d out/

      clipkit group big.jpg -m ./groupvit-gcc-yfcc -l cat,dog --short-side 448 --window 448 --stride 224

      clipkit group photo.jpg -m ViT-B-16 -p openai -l cat,dog --groups 64,8 -d out/
    """
    from clipkit.cli.common import model_options
    from clipkit.images import expand_inputs
    from clipkit.methods.group import iter_group, load_group_model
    from clipkit.prompts import parse_labels

    label_list = parse_labels(labels, labels_file)
    paths = expand_inputs(images or [], files_from)
    loaded = load_group_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint,
                                              threads))
    sink = open_sink(format, output, resume, title="group")
    options = drop_none(templates=templates, topk=top_k,
                        short_side=short_side, window=window, stride=stride, variant=variant,
                        groups=parse_groups(groups), overlay=overlay,
                        bg_thresh=bg_thresh,
                        out_dir=out_dir, workers=workers)
    results = iter_group(paths, label_list, loaded, quiet=bool(quiet), skip=sink.done, **options)
    finish(write_results(results, sink))
