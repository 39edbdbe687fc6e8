"""Glue shared by the commands: dropping unset options, the error table, writing results.

Nothing here imports torch; commands import the library inside their function bodies so ``--help`` stays fast.
"""

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from clipkit.errors import ClipkitError

HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}


def drop_none(**options: Any) -> dict[str, Any]:
    """The options the user actually set, so that the library's defaults apply to the rest."""
    return {key: value for key, value in options.items() if value is not None}


def model_options(model: str | None, pretrained: str | None, device: str | None,
                  precision: str | None, offline: bool | None, trust_checkpoint: bool | None,
                  threads: int | None = None) -> dict[str, Any]:
    """Load-model keyword arguments from the shared model options (and apply --threads)."""
    if threads is not None:
        from clipkit.device import set_threads

        set_threads(threads)
    return drop_none(model=model, pretrained=pretrained, device=device, precision=precision, offline=offline,
                     trust_checkpoint=trust_checkpoint)


def open_sink(fmt: str | None, output: Path | None, resume: bool | None = None, title: str = "results"):
    """The ResultSink for the output options; with ``resume`` its ``done`` set lists inputs to skip."""
    from clipkit.sink import ResultSink

    return ResultSink(fmt, output, resume=bool(resume), title=title)


def write_results(results: Iterable[Any], sink: Any) -> int:
    """Stream results into ``sink``; return the exit code (0 all inputs ok, 1 any failed)."""
    try:
        for result in results:
            sink.add(result)
    finally:
        code = sink.close()
    return code


def write_report(text: str, output: Path | None) -> None:
    """An ``eval`` report: to ``--output`` (atomically) or stdout."""
    if output is not None:
        from clipkit.writers import atomic_write_text

        atomic_write_text(output, text)
    else:
        typer.echo(text, nl=False)


def iou_table(result: dict, extra: list[str]) -> str:
    """Plain text for a segmentation evaluation: one IoU row per class (background first), mIoU, then ``extra``."""
    rows = sorted(result["per_class"].items(), key=lambda kv: kv[0] != "background")
    width = max([len("pixel acc"), *(len(k) for k, _ in rows)])
    lines = [f"{'class':<{width}}  IoU", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {iou:.4f}" for name, iou in rows]
    lines += [f"{'-' * width}  ------", f"{'mIoU':<{width}}  {result['miou']:.4f}",
              f"{'pixel acc':<{width}}  {result['pixel_accuracy']:.4f}", *extra]
    return "\n".join(lines) + "\n"


def finish(code: int) -> None:
    """End the command with ``code`` (Typer's Exit, so CliRunner sees it too)."""
    if code:
        raise typer.Exit(code)


class ClipkitGroup(TyperGroup):
    """The one error table: ClipkitError -> ``Error: <message>`` on stderr and its exit code.

    Unexpected exceptions get the same one-line treatment; ``CLIPKIT_DEBUG=1`` shows the traceback instead.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClipkitError as exc:
            if os.environ.get("CLIPKIT_DEBUG"):
                raise
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted (rerun with --resume to continue where it stopped).", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            # Typer/click's own exceptions (usage errors, Exit, Abort) keep their meaning.
            if type(exc).__module__.split(".")[0] in ("click", "typer") or os.environ.get("CLIPKIT_DEBUG"):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            typer.echo(f"Error: unexpected {type(exc).__name__}: {message} (CLIPKIT_DEBUG=1 shows the traceback)",
                       err=True)
            raise typer.Exit(1) from None


