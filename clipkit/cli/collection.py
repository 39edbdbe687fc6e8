"""``clipkit embed`` and ``clipkit search``: parsing and formatting only (:mod:`clipkit.collection` does the work).

The options of each command are the fields of its config (:mod:`clipkit.collection.config`, through
:func:`clipkit.cli.factory.config_parameters`) plus the shared model and run options; every check that needs no
model (folders, manifests, queries, option values) runs before torch is imported.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clipkit.cli import options as o
from clipkit.cli.factory import config_parameters
from clipkit.collection.config import EmbedConfig, SearchConfig
from clipkit.methods import MethodSpec

_MODEL = ("model", "pretrained", "device", "precision", "offline", "trust_checkpoint")

EMBED_SPEC = MethodSpec(
    "embed", EmbedConfig, "clipkit.collection.embed:EmbedPredictor",
    "Embed images (and texts) with any registry model into a sharded, resumable embedding folder.",
    description="Writes DIR/manifest.json and shards of L2-normalised embeddings: DIR/img_emb/img_emb_N.parquet "
                "(image_path, width, height, embedding), or with --layout clip-retrieval the npy + metadata "
                "parquet pairs clip-retrieval writes; --texts FILE adds DIR/text_emb/. Failed inputs go to "
                "DIR/errors.jsonl and the run goes on. Prints a JSON summary.",
    examples=("clipkit embed examples/scenes/images -o embeddings/",
              "clipkit embed photos/ -o embeddings/ -m ViT-B-32:openai --dtype float32 --resume",
              "clipkit embed --texts examples/labels.txt -o embeddings/ --resume"))
SEARCH_SPEC = MethodSpec(
    "search", SearchConfig, "", "Find the nearest images of text or image queries in an embedding folder.",
    description="Queries are embedded with the folder's own model. Prints one JSON line per query: "
                "{\"query\", \"type\", \"results\": [{\"path\", \"score\"}]} (cosine scores, best first); a table "
                "on a terminal. --out-dir writes a contact sheet per query.",
    examples=("clipkit search embeddings/ --text 'a red circle' -k 5",
              "clipkit search embeddings/ --text 'red circle' --text 'blue star' --out-dir sheets/",
              "clipkit search embeddings/ --image examples/scenes/images/scene_000000.png --index faiss"))

DirOutOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="The embedding folder to write (created).", rich_help_panel=o.OUTPUT,
    show_default=False)]
TextsOpt = Annotated[Path | None, typer.Option(
    "--texts", help="Also embed these texts, one per line (raw, no prompt templates) into DIR/text_emb/.",
    show_default=False)]
EmbedResumeOpt = Annotated[bool | None, typer.Option(
    "--resume", help="Continue an interrupted run into -o DIR: inputs in its finished shards are skipped (the "
    "model, --dtype, --normalize and --layout must be the same).", rich_help_panel=o.OUTPUT, show_default=False)]
FolderArg = Annotated[Path, typer.Argument(help="An embedding folder written by 'clipkit embed'.",
                                           show_default=False)]
TextQueryOpt = Annotated[list[str] | None, typer.Option(
    "--text", help="A text query (repeat for several).", show_default=False)]
ImageQueryOpt = Annotated[list[Path] | None, typer.Option(
    "--image", help="An image file as query (repeat for several).", show_default=False)]
SheetDirOpt = Annotated[Path | None, typer.Option(
    "--out-dir", "-d", help="Folder for one contact sheet per query: DIR/<query>.search.png.",
    rich_help_panel=o.OUTPUT, show_default=False)]
SearchModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="The collection's model (default: the one its manifest names; another is refused).",
    rich_help_panel=o.MODEL, show_default=False)]
SearchFormatOpt = Annotated[str | None, typer.Option(
    "--format", "-f", help="jsonl, json, csv (one row per hit) or table (default: table on a terminal, JSONL "
    "when piped).", rich_help_panel=o.OUTPUT, show_default=False)]
ResultsFileOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write the results to this file (atomically) instead of stdout.",
    rich_help_panel=o.OUTPUT, show_default=False)]


def _command(spec: MethodSpec, params: list[tuple[str, Any]], body: Any, required: tuple[str, ...] = ()) -> Any:
    def command(**kwargs: Any) -> None:
        body(kwargs)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a,
                           default=inspect.Parameter.empty if n in required else None) for n, a in params])
    command.__annotations__ = {}
    command.__name__ = spec.name
    examples = "\n\n".join(f"  {e}" for e in spec.examples)
    command.__doc__ = "\n\n".join((spec.summary, spec.description, "Examples:\n\n" + examples))
    return command


def _model_options(kw: dict[str, Any]) -> dict[str, Any]:
    from clipkit.checks import check_device, check_model

    model = {k: kw.pop(k) for k in _MODEL}
    check_device(model["device"], model["precision"])
    check_model(model["model"], model["pretrained"])
    model["trust_checkpoint"] = bool(model["trust_checkpoint"])
    return model


def _threads(threads: int | None) -> None:
    if threads is not None:
        from clipkit.device import set_threads

        set_threads(threads)


def _run_embed(kw: dict[str, Any]) -> None:
    from clipkit.collection import manifest as mf
    from clipkit.collection.shards import ERRORS
    from clipkit.errors import UsageError
    from clipkit.runner import collect_inputs

    images, out, texts_file, resume = kw.pop("images"), kw.pop("output"), kw.pop("texts"), bool(kw.pop("resume"))
    run = {k: kw.pop(k) for k in ("batch_size", "workers", "threads", "files_from", "quiet")}
    source = {k: kw.pop(k) for k in ("input_format", "image_column", "shard")}
    model = _model_options(kw)
    config = EmbedConfig.make(**{k: v for k, v in kw.items() if v is not None})
    if out is None:
        raise UsageError("give -o DIR: the folder to write the embeddings to")
    texts = mf.read_texts(texts_file) if texts_file is not None else None
    if not images and run["files_from"] is None and texts is None:
        raise UsageError("give images to embed (files, folders, globs, -) and/or --texts FILE")
    items = collect_inputs(images or [], run["files_from"], **source) if images or run["files_from"] else None
    mf.check_resume(Path(out), mf.read_manifest(out), config, resume, model["model"], model["pretrained"])
    _threads(run["threads"])

    from clipkit.collection.embed import embed

    summary = embed(items, out, texts=texts, config=config, resume=resume, batch_size=run["batch_size"],
                    workers=run["workers"], quiet=bool(run["quiet"]), **model)
    typer.echo(json.dumps(summary))
    if summary["errors"]:
        if not run["quiet"]:
            print(f"{summary['errors']} input(s) failed: see {Path(out) / ERRORS}", file=sys.stderr)
        raise typer.Exit(1)


def _run_search(kw: dict[str, Any]) -> None:
    from clipkit.collection import manifest as mf
    from clipkit.collection.search import check_queries
    from clipkit.errors import UsageError
    from clipkit.sink import resolve_format

    folder, texts, images = kw.pop("folder"), kw.pop("text"), kw.pop("image")
    out_dir, output, fmt, quiet, threads = (kw.pop(k) for k in ("out_dir", "output", "format", "quiet", "threads"))
    model = _model_options(kw)
    config = SearchConfig.make(**{k: v for k, v in kw.items() if v is not None})
    fmt = resolve_format(fmt, output, sys.stdout)
    if output is not None and Path(output).is_dir():
        raise UsageError(f"--output {output} is a folder: name a file (contact sheets go to --out-dir)")
    manifest = mf.require_manifest(folder)
    check_queries(texts, [str(p) for p in images or []])
    mf.check_model_matches(folder, manifest, model["model"], model["pretrained"], "search")
    if config.index == "faiss":
        from clipkit.collection.faiss_index import _faiss

        _faiss()  # a missing extra is a usage error before the model loads
    _threads(threads)

    from clipkit.collection.search import search

    records = search(folder, texts, [str(p) for p in images or []], config=config, quiet=bool(quiet), **model)
    if out_dir is not None:
        from clipkit.collection.sheet import write_sheets

        write_sheets(records, out_dir)
    text = _render(records, fmt)
    if output is not None:
        from clipkit.writers import atomic_write_text

        atomic_write_text(output, text)
    else:
        typer.echo(text, nl=False)


def _render(records: list[dict[str, Any]], fmt: str) -> str:
    """The search records as JSONL, JSON, CSV (one row per hit) or a rich table."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "json":
        return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    rows = [{"query": r["query"], "type": r["type"], "rank": i + 1, **hit}
            for r in records for i, hit in enumerate(r["results"])]
    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)) or ["query"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title="search")
    for column in ("query", "rank", "path", "score"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["query"], str(row["rank"]), row.get("path", row.get("text", "")), f"{row['score']:.4f}")
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=sys.stdout.isatty()).print(table)
    return buffer.getvalue()


embed = _command(EMBED_SPEC, [
    ("images", o.Inputs), ("output", DirOutOpt), ("texts", TextsOpt), *config_parameters(EMBED_SPEC),
    ("resume", EmbedResumeOpt), ("model", o.ModelOpt), ("pretrained", o.PretrainedOpt), ("device", o.DeviceOpt),
    ("precision", o.PrecisionOpt), ("offline", o.OfflineOpt), ("trust_checkpoint", o.TrustOpt),
    ("batch_size", o.BatchSizeOpt), ("workers", o.WorkersOpt), ("threads", o.ThreadsOpt),
    ("files_from", o.FilesFromOpt), ("input_format", o.InputFormatOpt), ("image_column", o.ImageColumnOpt),
    ("shard", o.ShardOpt), ("quiet", o.QuietOpt)], _run_embed)

search = _command(SEARCH_SPEC, [
    ("folder", FolderArg), ("text", TextQueryOpt), ("image", ImageQueryOpt), *config_parameters(SEARCH_SPEC),
    ("out_dir", SheetDirOpt), ("format", SearchFormatOpt), ("output", ResultsFileOpt), ("model", SearchModelOpt),
    ("pretrained", o.PretrainedOpt), ("device", o.DeviceOpt), ("precision", o.PrecisionOpt),
    ("offline", o.OfflineOpt), ("trust_checkpoint", o.TrustOpt), ("threads", o.ThreadsOpt), ("quiet", o.QuietOpt)],
    _run_search, required=("folder",))
