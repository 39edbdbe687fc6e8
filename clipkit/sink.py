"""Where results go: JSONL/JSON/CSV/table on stdout or in ``--output FILE``.

The format defaults to JSONL when stdout is piped and a table on a terminal (``--format`` overrides; with
``--output`` the suffix decides). JSONL streams: each line is flushed as soon as its image is done. An ``--output``
file is built as ``FILE.partial`` and moved into place when the run ends, so ``FILE`` is always whole; with
``resume`` a rerun reads the partial file, keeps its good lines and skips the inputs they cover (failed inputs are
retried).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from clipkit.errors import UsageError
from clipkit.results import ErrorRecord, Result
from clipkit.writers import atomic_write_text

FORMATS = ("jsonl", "json", "csv", "table")
_LIST_KEYS = ("labels", "detections", "classes", "phrases")


def resolve_format(fmt: str | None, output: str | Path | None, stream: TextIO) -> str:
    """The output format: explicit, else by ``--output`` suffix, else table on a terminal and JSONL in a pipe."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    if output is not None:
        suffix = Path(output).suffix.lower()
        return {".json": "json", ".csv": "csv"}.get(suffix, "jsonl")
    return "table" if stream.isatty() else "jsonl"


def flat_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per listed item (label, box, class, phrase), nested dicts flattened (``box.xmin`` -> ``xmin``)."""
    base = {k: v for k, v in record.items() if k not in _LIST_KEYS and not isinstance(v, list | dict)}
    items = next((record[k] for k in _LIST_KEYS if isinstance(record.get(k), list)), None)
    if not items:
        return [base]
    rows = []
    for rank, item in enumerate(items, start=1):
        row = {**base, "rank": rank}
        for key, value in item.items():
            if isinstance(value, dict):
                row.update(value)
            elif isinstance(value, list):
                row[key] = json.dumps(value)
            else:
                row[key] = value
        rows.append(row)
    return rows


class ResultSink:
    """Collects results and writes them in one format; ``close()`` finishes the output."""

    def __init__(self, fmt: str | None = None, output: str | Path | None = None, *, resume: bool = False,
                 stream: TextIO | None = None, title: str = "results"):
        self.stream = stream or sys.stdout
        self.output = Path(output) if output is not None else None
        self.format = resolve_format(fmt, output, self.stream)
        self.title = title
        self.records: list[dict[str, Any]] = []
        self.rows: list[list[str]] = []
        self.failed = 0
        self.done: set[str] = set()
        self._partial: TextIO | None = None
        if self.output is not None and self.format == "jsonl":
            self._open_partial(resume)
        elif resume and self.output is None:
            raise UsageError("--resume needs --output FILE (the JSONL file of the interrupted run)")

    @property
    def partial_path(self) -> Path:
        assert self.output is not None
        return self.output.with_name(self.output.name + ".partial")

    def _open_partial(self, resume: bool) -> None:
        kept: list[str] = []
        if resume:
            source = self.partial_path if self.partial_path.exists() else self.output
            if source is not None and source.exists():
                for line in source.read_text(encoding="utf-8").splitlines():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the torn last line of an interrupted run
                    if isinstance(record, dict) and "path" in record and "error" not in record:
                        kept.append(line)
                        self.done.add(str(record["path"]))
        self.partial_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.partial_path, "".join(line + "\n" for line in kept))
        self._partial = open(self.partial_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def add(self, result: Result) -> None:
        """Record one result (or error record); JSONL lines are written immediately."""
        if isinstance(result, ErrorRecord):
            self.failed += 1
            print(f"error: {result.path}: {result.error}", file=sys.stderr)
        record = result.to_dict()
        if self.format == "jsonl":
            line = json.dumps(record, ensure_ascii=False)
            target = self._partial or self.stream
            target.write(line + "\n")
            target.flush()
        elif self.format == "table":
            self.rows.append(result.table_row())
        else:
            self.records.append(record)

    def close(self) -> int:
        """Finish the output; return the exit code (0 all inputs succeeded, 1 any failed)."""
        if self.format == "jsonl" and self._partial is not None:
            self._partial.flush()
            os.fsync(self._partial.fileno())
            self._partial.close()
            os.replace(self.partial_path, self.output)  # type: ignore[arg-type]
        elif self.format == "json":
            self._emit(json.dumps(self.records, indent=2, ensure_ascii=False) + "\n")
        elif self.format == "csv":
            rows = [row for record in self.records for row in flat_rows(record)]
            columns = list(dict.fromkeys(key for row in rows for key in row))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            self._emit(buffer.getvalue())
        elif self.format == "table":
            self._table()
        return 1 if self.failed else 0

    def _emit(self, text: str) -> None:
        if self.output is not None:
            atomic_write_text(self.output, text)
        else:
            self.stream.write(text)
            self.stream.flush()

    def _table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=self.title, show_lines=False)
        table.add_column("image", overflow="fold")
        table.add_column("result", overflow="fold")
        for row in self.rows:
            table.add_row(*row)
        if self.output is not None:
            buffer = io.StringIO()
            Console(file=buffer, width=120).print(table)
            atomic_write_text(self.output, buffer.getvalue())
        else:
            Console(file=self.stream).print(table)
