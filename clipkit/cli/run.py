"""What every method command does with its parsed options: check, then run, then print.

Order matters for the user: every usage mistake (text, config values, templates, output options, device, model
spec, inputs) is found here before torch is imported, so it costs a fraction of a second; only then does the
model load and the runner start. A closed stdout ends the run quietly (``main`` in :mod:`clipkit.cli.app`).
"""

from __future__ import annotations

from typing import Any

import typer

from clipkit.methods import MethodSpec

_MODEL = ("model", "pretrained", "device", "precision", "offline", "trust_checkpoint")
_RUN = ("batch_size", "workers", "threads", "max_side", "files_from", "format", "output", "resume", "quiet",
        "out_dir", "input_format", "image_column", "shard", "engine", "ray_concurrency", "ray_gpus")


def run_command(spec: MethodSpec, options: dict[str, Any]) -> None:
    """Validate ``options`` (the command's parameters), run the method and exit with its code (0 all inputs
    ok, 1 any failed, 2 usage error)."""
    from clipkit.api import check_run_options, parse_text
    from clipkit.errors import UsageError
    from clipkit.runner import collect_inputs
    from clipkit.sink import check_output

    images = options.pop("images") or []
    model = {k: options.pop(k, None) for k in _MODEL}
    run = {k: options.pop(k, None) for k in _RUN}
    if spec.text == "labels":
        text = parse_text(spec, options.pop("labels"), options.pop("labels_file"))
    elif spec.text == "caption":
        text = (options.pop("caption"), options.pop("phrases"))
        if text == (None, None):
            raise UsageError("give a caption (--caption TEXT) and/or phrases (--phrases 'a;b')")
    else:
        text = None
    config = checked_config(spec, options, model)
    if spec.out_dir == "required" and run["out_dir"] is None:
        raise UsageError(f"--out-dir is required: the folder for the {spec.name} pictures")
    check_output(run["format"], run["output"], bool(run["resume"]))
    check_run_options(run["input_format"], run["shard"], run["engine"], run["ray_concurrency"], run["ray_gpus"])
    items = collect_inputs(images, run["files_from"], input_format=run["input_format"],
                           image_column=run["image_column"], shard=run["shard"])
    code = _run(spec, text, config, items, model, run)
    if code:
        raise typer.Exit(code)


def checked_config(spec: MethodSpec, options: dict[str, Any], model: dict[str, Any]) -> Any:
    """The method's config from the options the user set (unset ones: the defaults), with every check that
    needs no torch: config values, templates, device and precision, model spec. Shared by the method and eval
    commands."""
    from clipkit.checks import check_device, check_model
    from clipkit.prompts import check_templates

    config = spec.config.make(**{k: v for k, v in options.items() if v is not None})
    check_templates(getattr(config, "templates", None))
    check_device(model.get("device"), model.get("precision"))
    check_model(model.get("model"), model.get("pretrained"))
    return config


def _run(spec: MethodSpec, text: Any, config: Any, items: list, model: dict[str, Any], run: dict[str, Any]) -> int:
    from clipkit.api import run as run_method
    from clipkit.sink import ResultSink

    params = {"method": spec.name, "model": model["model"], "pretrained": model["pretrained"],
              "text": list(text) if isinstance(text, list | tuple) else text,
              "config": config.model_dump(mode="json"), "shard": run["shard"]}
    sink = ResultSink(run["format"], run["output"], resume=bool(run["resume"]), title=spec.name, params=params)
    if run["threads"] is not None:
        from clipkit.device import set_threads

        set_threads(run["threads"])
    model_options = {k: v for k, v in model.items() if v is not None and k != "model"}
    if not items:  # a --shard part that no input falls in: an empty result (parts still concatenate), not an error
        if not run["quiet"]:
            typer.echo(f"--shard {run['shard']}: no input falls in this part", err=True)
        return _write(sink.close)
    results = run_method(spec.name, items, text, model=model["model"], config=config, out_dir=run["out_dir"],
                         batch_size=run["batch_size"], workers=run["workers"], quiet=bool(run["quiet"]),
                         max_side=run["max_side"] or 0, skip=sink.done, engine=run["engine"],
                         ray_concurrency=run["ray_concurrency"], ray_gpus=run["ray_gpus"], **model_options)
    try:
        for result in results:
            _write(sink.add, result)
    except BaseException:
        sink.abort()  # the journal stays as FILE.partial: --resume continues from it
        raise
    return _write(sink.close)


def _write(step: Any, *args: Any) -> Any:
    """A sink call; a full disk or an unwritable target (``-o /dev/full``) is one clear error, exit 1."""
    from clipkit.errors import ClipkitError

    try:
        return step(*args)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise ClipkitError(f"cannot write the results: {exc.strerror or exc}"
                           + (f" ({exc.filename})" if exc.filename else "")) from None
