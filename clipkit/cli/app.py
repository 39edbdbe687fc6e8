"""The ``clipkit`` command: wiring only.

Every command lives in its own module under ``clipkit/cli/`` and imports the library (and torch) inside its
function, so ``clipkit --help`` and ``clipkit --version`` start in a fraction of a second.
"""

import importlib
import importlib.util
from typing import Annotated

import typer

from clipkit._version import __version__
from clipkit.cli.common import HELP_SETTINGS, ClipkitGroup

# (group, command name, module under clipkit.cli, function). A module or function that does not exist (yet) is
# skipped, so method modules can land one at a time; a module that exists but fails to import is a real error.
COMMANDS = [
    (None, "classify", "classify", "classify"),
    (None, "segment", "segment", "segment"),
    (None, "group", "group", "group"),
    (None, "detect", "detect", "detect"),
    (None, "ground", "ground", "ground"),
    (None, "sketch", "sketch", "sketch"),
    (None, "models", "models", "models"),
    ("world", "export", "world", "export"),
    ("world", "train-clip", "world", "train_clip"),
    ("world", "train-lseg", "world_lseg", "train_lseg"),
    ("world", "train-groupvit", "world_groupvit", "train_groupvit"),
    ("eval", "segment", "eval_segment", "eval_segment"),
    ("eval", "group", "eval_group", "eval_group"),
    ("eval", "detect", "eval_detect", "eval_detect"),
    ("eval", "ground", "eval_ground", "eval_ground"),
]

app = typer.Typer(
    name="clipkit",
    cls=ClipkitGroup,
    help="Open-vocabulary vision with CLIP-family models: classify, segment, group, detect, ground, sketch.\n\n"
    "Runs offline on the bundled shapes-clip model; any open_clip model with --model/--pretrained.",
    context_settings=HELP_SETTINGS,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
groups = {
    "world": typer.Typer(cls=ClipkitGroup, context_settings=HELP_SETTINGS, no_args_is_help=True,
                         help="The synthetic shapes world: export datasets, train the bundled models."),
    "eval": typer.Typer(cls=ClipkitGroup, context_settings=HELP_SETTINGS, no_args_is_help=True,
                        help="Measure a method on a dataset in the shapes world's export format."),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clipkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    """Open-vocabulary vision with CLIP-family models."""


def _register() -> None:
    for group, name, module, function in COMMANDS:
        qualified = f"clipkit.cli.{module}"
        if importlib.util.find_spec(qualified) is None:
            continue
        command = getattr(importlib.import_module(qualified), function, None)
        if command is not None:
            (app if group is None else groups[group]).command(name)(command)
    for name, sub in groups.items():
        if sub.registered_commands:
            app.add_typer(sub, name=name)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
