"""``clipkit ground``: GLIP-style phrase grounding (parsing and formatting only)."""

from typing import Annotated

import typer

from clipkit.cli.common import drop_none, finish, model_options, open_sink, write_results
from clipkit.cli.options import (
    DeviceOpt,
    FilesFromOpt,
    FormatOpt,
    Inputs,
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

GROUND = "Grounding"


def ground(
    images: Inputs = None,
    caption: Annotated[str | None, typer.Option(
        "--caption", "-c", help="A sentence; its noun phrases are grounded (GLIP's DT? JJ* NN+ chunks; spaCy "
        "noun chunks when an English spaCy model is installed). 'a . b . c .' is read as a label list.",
        rich_help_panel=GROUND, show_default=False)] = None,
    phrases: Annotated[str | None, typer.Option(
        "--phrases", help="Explicit phrases, ';'-separated (located in --caption when both are given).",
        rich_help_panel=GROUND, show_default=False)] = None,
    all_boxes: Annotated[bool | None, typer.Option(
        "--all", help="Every box scoring at least --threshold per phrase, instead of the best one.",
        rich_help_panel=GROUND, show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Minimum score with --all (default 0.5).", rich_help_panel=GROUND,
        show_default=False)] = None,
    context: Annotated[str | None, typer.Option(
        "--context", help="ReCLIP context view scored with each box: blur (default), grey or none.",
        rich_help_panel=GROUND, show_default=False)] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help="Region embedding of detect scored with each box: image (default), fast, both, none.",
        rich_help_panel=GROUND, show_default=False)] = None,
    selective_search: SelectiveSearchOpt = None,
    min_cosine: MinCosineOpt = None,
    shifts: ShiftsOpt = None,
    templates: TemplatesOpt = None,
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
    """Ground the phrases of a caption in images: one box per phrase (or all above --threshold with --all).

    Examples:

      clipkit ground scene.png --caption "a red circle left of a blue square"

      clipkit ground scenes/ --phrases "red circle;blue square" --out-dir grounded/

      clipkit ground scene.png --caption "red circle . green star ." --all --threshold 0.6
    """
    from clipkit.draw import BoxArtefacts
    from clipkit.images import expand_inputs
    from clipkit.methods.ground import iter_ground
    from clipkit.registry import load_model

    paths = expand_inputs(images or [], files_from)
    outputs = BoxArtefacts(out_dir=out_dir)
    loaded = load_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint, threads))
    sink = open_sink(format, output, resume, title="ground")
    options = drop_none(all_boxes=all_boxes, threshold=threshold, context=context, region=region,
                        selective_search=selective_search, min_cosine=min_cosine, templates=templates,
                        workers=workers)
    if shifts is not None:
        options["regions"] = {"dense_shifts": shifts}
    results = iter_ground(paths, loaded, caption, phrases, quiet=bool(quiet), skip=sink.done, **options)
    code = write_results(outputs.tap(results), sink)
    outputs.close()
    finish(code)
