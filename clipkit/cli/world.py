"""`clipkit world …`: export the synthetic shapes world and train the bundled tiny CLIP.

Parses and formats only; the library (clipkit.world) owns every default. No torch import at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The synthetic shapes world: export datasets, train the bundled models.",
                  no_args_is_help=True)


def _usage_error(msg: str) -> Exception:
    try:
        from clipkit.errors import UsageError
    except ImportError:  # the core's error types are not merged yet
        return typer.BadParameter(msg)
    return UsageError(msg)


def _parse_size(size: str) -> tuple[int | None, tuple[int, int] | None]:
    """"224" -> (224, None); "64:448" -> (None, (64, 448))."""
    try:
        if ":" in size:
            lo, hi = (int(v) for v in size.split(":", 1))
            if not 32 <= lo <= hi <= 2048:
                raise ValueError
            return None, (lo, hi)
        px = int(size)
        if not 32 <= px <= 2048:
            raise ValueError
        return px, None
    except ValueError:
        raise _usage_error(f"--size must be PX or LO:HI with 32 <= PX <= 2048, got {size!r}") from None


@app.command("export")
def export(
    out: Annotated[Path, typer.Argument(help="Output folder (created).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of scenes.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (scene i is the same for any --n).")] = 0,
    size: Annotated[str, typer.Option("--size", help="Square side in px, or LO:HI for a random side per "
                                                     "scene.")] = "224",
    max_objects: Annotated[int, typer.Option("--max-objects", min=1, max=8,
                                             help="At most this many objects per scene.")] = 4,
    min_objects: Annotated[int, typer.Option("--min-objects", min=1, max=8,
                                             help="At least this many objects per scene.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write N scenes as PNGs with COCO instances, captions, semantic masks and referring expressions."""
    from rich.progress import Progress

    from clipkit.world.export import export as do_export

    if min_objects > max_objects:
        raise _usage_error(f"--min-objects {min_objects} exceeds --max-objects {max_objects}")
    px, rng = _parse_size(size)
    with Progress(disable=quiet, transient=True) as bar:
        task = bar.add_task("generating scenes", total=n)
        folder = do_export(out, n=n, seed=seed, size=px or 224, size_range=rng, min_objects=min_objects,
                           max_objects=max_objects, progress=lambda k: bar.advance(task, k))
    typer.echo(f"wrote {n} scenes to {folder}", err=True)
