"""``clipkit sketch``: CLIPasso stroke sketches optimised against CLIP."""

from pathlib import Path
from typing import Annotated

import typer

from clipkit.cli.common import drop_none, finish, model_options, open_sink, write_results
from clipkit.cli.options import (
    DeviceOpt,
    FilesFromOpt,
    FormatOpt,
    Inputs,
    ModelOpt,
    OfflineOpt,
    OutputOpt,
    PrecisionOpt,
    PretrainedOpt,
    QuietOpt,
    ResumeOpt,
    ThreadsOpt,
    TrustOpt,
    WorkersOpt,
)

SKETCH = "Sketch"


def sketch(
    images: Inputs = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", "-d", help="Folder for <stem>.svg, <stem>.png (and <stem>.gif with --frames). Required.",
        show_default=False)] = None,
    strokes: Annotated[int | None, typer.Option(
        "--strokes", "-n", help="Number of strokes, one cubic Bézier each (default 16).", min=1,
        rich_help_panel=SKETCH, show_default=False)] = None,
    iterations: Annotated[int | None, typer.Option(
        "--iterations", "-i", help="Maximum optimisation steps per seed (default 2001; stops early when the "
        "loss stalls).", min=1, rich_help_panel=SKETCH, show_default=False)] = None,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", help="Sketches drawn from different seeds; the lowest loss is kept (default 3).", min=1,
        rich_help_panel=SKETCH, show_default=False)] = None,
    width: Annotated[float | None, typer.Option(
        "--width", "-w", help="Full stroke width in canvas pixels (default 3.0 = diffvg half-width 1.5).",
        rich_help_panel=SKETCH, show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="First seed; the others are seed+1000, seed+2000, ... (default 0).",
        rich_help_panel=SKETCH, show_default=False)] = None,
    canvas: Annotated[int | None, typer.Option(
        "--canvas", help="Canvas side in pixels (default 224).", min=16, rich_help_panel=SKETCH,
        show_default=False)] = None,
    renderer: Annotated[str | None, typer.Option(
        "--renderer", help="auto (diffvg when installed, else torch), torch or diffvg.",
        rich_help_panel=SKETCH, show_default=False)] = None,
    frames: Annotated[bool | None, typer.Option(
        "--frames", help="Also write <stem>.gif, the optimisation every 10 steps.", rich_help_panel=SKETCH,
        show_default=False)] = None,
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
    """Draw each image as a few black strokes, optimised so CLIP sees the same object (CLIPasso).

    Writes DIR/<stem>.svg and DIR/<stem>.png per image; one JSON line per image with the loss and time.

    Examples:

      clipkit sketch examples/scenes/scene_000.png --out-dir sketches/

      clipkit sketch photo.jpg -d out/ --strokes 8 --iterations 300 --seeds 1 --frames

      clipkit sketch photo.jpg -d out/ -m RN50 -p openai --renderer diffvg
    """
    from clipkit.errors import UsageError
    from clipkit.images import expand_inputs
    from clipkit.methods.sketch import iter_sketch, make_options
    from clipkit.registry import load_model

    if out_dir is None:
        raise UsageError("--out-dir is required: the folder for the SVG and PNG sketches")
    options = make_options(**drop_none(strokes=strokes, iterations=iterations, seeds=seeds, width=width,
                                       seed=seed, canvas=canvas, renderer=renderer, frames=frames))
    if options.renderer not in ("auto", "torch", "diffvg"):
        raise UsageError(f"unknown renderer {options.renderer!r}; choose one of: auto, torch, diffvg")
    paths = expand_inputs(images or [], files_from)
    loaded = load_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint, threads))
    sink = open_sink(format, output, resume, title="sketch")
    results = iter_sketch(paths, loaded, out_dir, options=options, workers=workers, quiet=bool(quiet),
                          skip=sink.done)
    finish(write_results(results, sink))
