"""Glue shared by the commands: dropping unset options and the one error table.

Nothing here imports torch; commands import the library inside their function bodies so ``--help`` stays fast.
"""

import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from clipkit.errors import ClipkitError

HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}


def drop_none(**options: Any) -> dict[str, Any]:
    """The options the user actually set, so that the library's defaults apply to the rest."""
    return {key: value for key, value in options.items() if value is not None}


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
        except BrokenPipeError:
            # the reader closed the pipe (`| head`): end quietly with 0, as cat and grep do; Python flushes
            # stdout again at exit, so point it at /dev/null first
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(0) from None
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


