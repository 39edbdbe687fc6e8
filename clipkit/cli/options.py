"""Options shared by every command, declared once.

All default to ``None`` so that an unset option is dropped (``cli.common.drop_none``) and the library's own
default applies: the CLI never holds a default of its own.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

MODEL = "Model"
OUTPUT = "Output"
RUN = "Run"

Inputs = Annotated[
    list[str] | None,
    typer.Argument(help="Image files, folders (recursive), glob patterns, or '-' to read paths from stdin.",
                   show_default=False),
]


def model_option(default: str = "shapes-clip") -> Any:
    """The ``--model`` option, its help naming ``default`` (the model loaded when none is given)."""
    return Annotated[str | None, typer.Option(
        "--model", "-m", help="Bundled model name, open_clip architecture (ViT-B-32, also ViT-B-32:openai), "
        "hf-hub:org/repo, or a folder with open_clip_config.json + open_clip_model.safetensors. "
        f"Default: {default}.", rich_help_panel=MODEL, show_default=False)]


ModelOpt = model_option()
PretrainedOpt = Annotated[str | None, typer.Option(
    "--pretrained", "-p", help="Weights for an open_clip architecture: a tag (openai, laion2b_s34b_b79k…), "
    "a .safetensors/.pt file, or 'random'.", rich_help_panel=MODEL, show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option(
    "--device", help="auto, cpu, cuda, cuda:N or mps (default: $CLIPKIT_DEVICE, then cuda > mps > cpu).",
    rich_help_panel=MODEL, show_default=False)]
PrecisionOpt = Annotated[str | None, typer.Option(
    "--precision", help="fp32, fp16 or bf16 (autocast). Default fp32.", rich_help_panel=MODEL, show_default=False)]
OfflineOpt = Annotated[bool | None, typer.Option(
    "--offline/--online", help="Never touch the network (also $CLIPKIT_OFFLINE=1 or $HF_HUB_OFFLINE=1).",
    rich_help_panel=MODEL, show_default=False)]
TrustOpt = Annotated[bool | None, typer.Option(
    "--trust-checkpoint", help="Allow a .pt/.bin checkpoint to unpickle arbitrary Python objects "
    "(can run code: only for sources you trust).", rich_help_panel=MODEL, show_default=False)]
BatchSizeOpt = Annotated[int | None, typer.Option(
    "--batch-size", "-b", help="Images per forward pass.", rich_help_panel=RUN, show_default=False, min=1)]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-j", help="Image-decoding worker processes (default: automatic).", rich_help_panel=RUN,
    show_default=False, min=0)]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", help="CPU threads for torch (default: torch's choice).", rich_help_panel=RUN, show_default=False,
    min=1)]
MaxSideOpt = Annotated[int | None, typer.Option(
    "--max-side", help="Working resolution: a longer image is downscaled (JPEGs decoded at reduced size) and "
    "its results mapped back to the original, so memory follows this setting, not the input. Default: 1344 "
    "(classify 4096).", rich_help_panel=RUN, show_default=False, min=32)]
FilesFromOpt = Annotated[Path | None, typer.Option(
    "--files-from", help="Read input paths from this file, one per line.", rich_help_panel=RUN,
    show_default=False)]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", help="jsonl, json, csv or table (default: table on a terminal, JSONL when piped).",
    rich_help_panel=OUTPUT, show_default=False)]
OutputOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write results to this file instead of stdout (journalled in FILE.partial, moved into "
    "place when the run ends).", rich_help_panel=OUTPUT,
    show_default=False)]
OutDirOpt = Annotated[Path | None, typer.Option(
    "--out-dir", "-d", help="Folder for per-image pictures: DIR/<stem>.<kind>.png (masks, overlays, boxes).",
    rich_help_panel=OUTPUT,
    show_default=False)]
ResumeOpt = Annotated[bool | None, typer.Option(
    "--resume", help="Continue an interrupted run: skip inputs already in --output (any format but table).",
    rich_help_panel=OUTPUT, show_default=False)]
QuietOpt = Annotated[bool | None, typer.Option(
    "--quiet", "-q", help="No progress bar or log messages on stderr.", rich_help_panel=OUTPUT,
    show_default=False)]
LabelsOpt = Annotated[str | None, typer.Option(
    "--labels", "-l", help="Comma-separated labels, e.g. 'cat,dog,red circle'.", show_default=False)]
LabelsFileOpt = Annotated[Path | None, typer.Option(
    "--labels-file", help="File with one label per line.", show_default=False)]
TemplatesOpt = Annotated[str | None, typer.Option(
    "--templates", "-t", help="Prompt templates: openai (80), simple (7), none ({}), a file (one per line), "
    "or an inline template such as 'a photo of a {}.' Default: the model's own.", show_default=False)]
CaptionOpt = Annotated[str | None, typer.Option(
    "--caption", "-c", help="A sentence; its noun phrases are grounded (GLIP's DT? JJ* NN+ chunks; spaCy noun "
    "chunks when an English spaCy model is installed). 'a . b . c .' is read as a label list.",
    show_default=False)]
PhrasesOpt = Annotated[str | None, typer.Option(
    "--phrases", help="Explicit phrases, ';'-separated (phrases may hold commas; located in --caption when both "
    "are given).", show_default=False)]
OutDirRequiredOpt = Annotated[Path | None, typer.Option(
    "--out-dir", "-d", help="Folder for the pictures (required).", rich_help_panel=OUTPUT, show_default=False)]
GroupModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="A GroupViT: bundled name, Hugging Face GroupViT folder (config.json + "
    "model.safetensors) or NVlabs .pth; or any open_clip model (bundled name, architecture such as "
    "ViT-B-16:openai, hf-hub:org/repo, folder) for training-free grouping. Default: shapes-groupvit.",
    rich_help_panel=MODEL, show_default=False)]
INPUT = "Input and scale"
InputFormatOpt = Annotated[str | None, typer.Option(
    "--input-format", help="auto (a .tar is a webdataset shard, a save_to_disk folder a Hugging Face dataset), "
    "files, webdataset (tar shards, folders of them, brace patterns such as 'data/{00000..00099}.tar') or hf "
    "(save_to_disk folder or image folder). Default: auto.", rich_help_panel=INPUT, show_default=False,
    metavar="auto|files|webdataset|hf")]
ImageColumnOpt = Annotated[str | None, typer.Option(
    "--image-column", help="The image in a dataset input: the column of a Hugging Face dataset (default: the first "
    "Image column) or the member extension of a webdataset sample, like clip-retrieval's --wds_image_key "
    "(default: the first of jpg, jpeg, png, webp…).", rich_help_panel=INPUT, show_default=False)]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", help="Process only part i of N (i/N, 0-based) of the inputs: a hash of each input's name, so N "
    "runs over the same inputs in any order split them without overlap; concatenate their outputs.",
    rich_help_panel=INPUT, show_default=False, metavar="i/N")]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="local (this process and its decoding workers) or ray (Ray Data: the cluster at "
    "$RAY_ADDRESS, else a local Ray runtime; pip install 'clipkit[ray]'). Default: local.",
    rich_help_panel=INPUT, show_default=False, metavar="local|ray")]
RayConcurrencyOpt = Annotated[int | None, typer.Option(
    "--ray-concurrency", help="With --engine ray: predictor actors, one model each (default: one per GPU of the "
    "cluster, else one per CPU, at most 4).", rich_help_panel=INPUT, show_default=False, min=1)]
RayGpusOpt = Annotated[float | None, typer.Option(
    "--ray-gpus", help="With --engine ray: GPUs per predictor actor (default: 1 when the cluster has GPUs, else 0).",
    rich_help_panel=INPUT, show_default=False, min=0)]
