"""The ``clipkit`` command: wiring only.

Every command lives in its own module under ``clipkit/cli/`` and imports the library (and torch) inside its
function, so ``clipkit --help`` and ``clipkit --version`` start in a fraction of a second.
"""

import importlib
from typing import Annotated

import typer

from clipkit._version import __version__
from clipkit.cli.common import HELP_SETTINGS, ClipkitGroup

# The six method commands are built from the method table (clipkit.methods.METHODS, clipkit.cli.factory); the
# others are (group, command name, module under clipkit.cli, function).
COMMANDS = [
    (None, "models", "models", "models"),
    (None, "embed", "collection", "embed"),
    (None, "search", "collection", "search"),
    ("world", "export", "world", "export"),
    ("world", "train-clip", "world", "train_clip"),
    ("world", "train-lseg", "world_lseg", "train_lseg"),
    ("world", "train-groupvit", "world_groupvit", "train_groupvit"),
    ("world", "train-judge", "world", "train_judge"),
    ("world", "train-sketch-model", "world", "train_sketch_model"),
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
    from clipkit.cli.evals import EVALS, eval_command
    from clipkit.cli.factory import method_command
    from clipkit.methods import METHODS

    for name, spec in METHODS.items():
        app.command(name)(method_command(spec))
    for name in EVALS:
        groups["eval"].command(name)(eval_command(name))
    for group, name, module, function in COMMANDS:
        command = getattr(importlib.import_module(f"clipkit.cli.{module}"), function)
        (app if group is None else groups[group]).command(name)(command)
    for name, sub in groups.items():
        if sub.registered_commands:
            app.add_typer(sub, name=name)


_register()


def main() -> None:
    """Console-script entry point (a closed pipe ends a run quietly: see ``ClipkitGroup``)."""
    app()
