"""``clipkit classify``: CLIP zero-shot classification."""

from typing import Annotated

import typer

from clipkit.cli.common import drop_none, finish, model_options, open_sink, write_results
from clipkit.cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    FilesFromOpt,
    FormatOpt,
    Inputs,
    LabelsFileOpt,
    LabelsOpt,
    ModelOpt,
    OfflineOpt,
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


def classify(
    images: Inputs = None,
    labels: LabelsOpt = None,
    labels_file: LabelsFileOpt = None,
    templates: TemplatesOpt = None,
    top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Keep the k best labels.",
                                                 show_default=False)] = None,
    multi_label: Annotated[bool | None, typer.Option(
        "--multi-label", help="Keep every label scoring at least --threshold (SigLIP: independent sigmoids).",
        show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Score threshold for --multi-label (default 0.5 SigLIP, 0.2 softmax models).",
        show_default=False)] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    offline: OfflineOpt = None,
    trust_checkpoint: TrustOpt = None,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    files_from: FilesFromOpt = None,
    format: FormatOpt = None,
    output: OutputOpt = None,
    resume: ResumeOpt = None,
    quiet: QuietOpt = None,
) -> None:
    """Zero-shot classify images against free-text labels (CLIP: prompt ensembles, softmax over labels).

    Examples:

      clipkit classify examples/scenes/ --labels "red circle,blue square,green triangle"

      clipkit classify photo.jpg -m ViT-B-32 -p openai --labels cat,dog --top-k 1

      find imgs -name '*.jpg' | clipkit classify - --labels-file labels.txt -o scores.jsonl --resume
    """
    from clipkit.images import expand_inputs
    from clipkit.methods.classify import iter_classify
    from clipkit.prompts import parse_labels
    from clipkit.registry import load_model

    label_list = parse_labels(labels, labels_file)
    paths = expand_inputs(images or [], files_from)
    loaded = load_model(**model_options(model, pretrained, device, precision, offline, trust_checkpoint, threads))
    sink = open_sink(format, output, resume, title="classify")
    options = drop_none(templates=templates, top_k=top_k, multi_label=multi_label, threshold=threshold,
                        batch_size=batch_size, workers=workers)
    results = iter_classify(paths, label_list, loaded, quiet=bool(quiet), skip=sink.done, **options)
    finish(write_results(results, sink))
