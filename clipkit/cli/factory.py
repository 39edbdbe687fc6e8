"""Commands built from the method table: each config field becomes an option, the shared options are added once.

``method_command(spec)`` returns a plain function whose signature Typer reads (``__signature__``, Typer's public
way of declaring parameters): the inputs argument, the method's text options (labels or caption), one option
per field of ``spec.config`` (``top_k`` → ``--top-k``, help = the field's description + its default), then
``--out-dir`` where the method writes pictures, and the model, run and output options every command shares.
Every option defaults to ``None`` and unset ones are not passed on, so the config's defaults apply.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Annotated, Any, Literal

import typer

from clipkit.cli import options as o
from clipkit.methods import MethodSpec

SHARED: list[tuple[str, Any]] = [
    ("pretrained", o.PretrainedOpt), ("device", o.DeviceOpt), ("precision", o.PrecisionOpt),
    ("offline", o.OfflineOpt), ("trust_checkpoint", o.TrustOpt), ("batch_size", o.BatchSizeOpt),
    ("workers", o.WorkersOpt), ("threads", o.ThreadsOpt), ("max_side", o.MaxSideOpt), ("files_from", o.FilesFromOpt),
    ("format", o.FormatOpt), ("output", o.OutputOpt), ("resume", o.ResumeOpt), ("quiet", o.QuietOpt),
    ("input_format", o.InputFormatOpt), ("image_column", o.ImageColumnOpt), ("shard", o.ShardOpt),
    ("engine", o.EngineOpt), ("ray_concurrency", o.RayConcurrencyOpt), ("ray_gpus", o.RayGpusOpt),
]
MODEL_OPTIONS = ("pretrained", "device", "precision", "offline", "trust_checkpoint")
TEXT: dict[str, list[tuple[str, Any]]] = {
    "labels": [("labels", o.LabelsOpt), ("labels_file", o.LabelsFileOpt)],
    "caption": [("caption", o.CaptionOpt), ("phrases", o.PhrasesOpt)],
    "none": [],
}


def _cli_type(annotation: Any) -> type:
    """The type the command line parses a field as: int, float, bool, else str (lists, choices, unions)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if annotation in (int, float, bool):
        return annotation
    return str


def _default_text(value: Any) -> str:
    if value is None or value == {} or value == ():
        return ""
    if isinstance(value, bool):
        return " Default: on." if value else ""
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value)
    if isinstance(value, float):
        value = f"{value:g}"
    return f" Default: {value}."


def _choices(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    literal = next((a for a in [annotation, *args] if typing.get_origin(a) is Literal), None)
    return "|".join(typing.get_args(literal)) if literal is not None else ""


def config_parameters(spec: MethodSpec) -> list[tuple[str, Any]]:
    """``(name, Annotated[...])`` for each CLI field of the method's config."""
    out = []
    for name, field in spec.config.cli_fields().items():
        extra = field.json_schema_extra or {}
        kind = _cli_type(field.annotation)
        flag = extra.get("flag") or "--" + name.replace("_", "-")
        if kind is bool and field.default is True:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
        names = [flag, *([extra["short"]] if extra.get("short") else [])]
        info = typer.Option(*names, help=(field.description or "") + _default_text(field.default),
                            rich_help_panel=extra.get("panel") or spec.name.capitalize(), show_default=False,
                            metavar=extra.get("metavar") or _choices(field.annotation) or None)
        out.append((name, Annotated[kind | None, info]))
    return out


def model_option_for(spec: MethodSpec) -> Any:
    """The ``--model`` option of ``spec``'s commands (its help names the model loaded by default)."""
    if spec.model_kind == "group":
        return o.GroupModelOpt
    return o.model_option(spec.default_model) if spec.default_model else o.ModelOpt


def method_command(spec: MethodSpec) -> Any:
    """The Typer command function of ``spec`` (see the module docstring)."""
    params = [("images", o.Inputs), *TEXT[spec.text], *config_parameters(spec)]
    if spec.out_dir != "none":
        params.append(("out_dir", o.OutDirRequiredOpt if spec.out_dir == "required" else o.OutDirOpt))
    if spec.model_kind != "none":
        params += [("model", model_option_for(spec))]
    params += [(n, a) for n, a in SHARED if spec.model_kind != "none" or n not in MODEL_OPTIONS]

    def command(**kwargs: Any) -> None:
        from clipkit.cli.run import run_command

        run_command(spec, kwargs)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=a)
         for n, a in params])
    command.__annotations__ = {}
    command.__name__ = spec.name
    examples = "\n\n".join(f"  {e}" for e in spec.examples)
    command.__doc__ = "\n\n".join(p for p in (spec.summary, spec.description,
                                              "Examples:\n\n" + examples if examples else "") if p)
    return command
