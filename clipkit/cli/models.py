"""``clipkit models``: what can be loaded, and what is already on this machine."""

from typing import Annotated

import typer

from clipkit.cli.options import FormatOpt


def models(
    local: Annotated[bool | None, typer.Option("--local", help="Only models whose weights are on this machine.",
                                                  show_default=False)] = None,
    search: Annotated[str | None, typer.Option("--search", "-s", help="Only names containing this text.",
                                                  show_default=False)] = None,
    format: FormatOpt = None,
) -> None:
    """List bundled models and open_clip architectures with their pretrained tags.

    The 'local' column marks weights already available offline (bundled, or in the Hugging Face / open_clip
    caches). Examples:

      clipkit models --local

      clipkit models --search ViT-B-32 --format jsonl
    """
    import json
    import sys

    from clipkit.catalog import list_models

    rows = [r for r in list_models() if (not local or r["local"]) and (not search or search.lower() in
                                                                        r["model"].lower())]
    fmt = format or ("table" if sys.stdout.isatty() else "jsonl")
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title="clipkit models")
        for column in ("model", "pretrained", "kind", "local"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["model"], r["pretrained"] or "", r["kind"], "✓" if r["local"] else "")
        Console().print(table)
    elif fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    elif fmt == "jsonl":
        for r in rows:
            typer.echo(json.dumps(r))
    else:
        from clipkit.errors import UsageError

        raise UsageError(f"clipkit models prints jsonl, json or table, not {fmt!r}")
