"""Where results go: JSONL/JSON/CSV/table on stdout or in ``--output FILE``.

The format defaults to JSONL when stdout is piped and a table on a terminal (``--format`` overrides; with
``--output`` the suffix decides). On stdout, JSONL streams: each line is flushed as soon as its image is done.

``--output FILE`` is journalled: every result is appended (and flushed) to ``FILE.partial`` as a JSON line, and
when the run ends the journal becomes ``FILE`` in the chosen format, moved into place atomically — so ``FILE`` is
always whole, and an interrupted run leaves a ``.partial`` that says so. ``--resume`` reads the journal (or, when
the last run finished, ``FILE`` itself, in any format but a table), keeps its successful records, and reports
their inputs as done; failed inputs are retried. This works the same for every command and format.

Beside ``FILE``, ``FILE.run.json`` records the run's parameters (method, model, labels or caption, every config
value); ``--resume`` with other parameters is a usage error, so one file never mixes two kinds of results.

The journal is locked (``flock``) for the whole run: a second run into the same ``FILE`` is refused with a usage
error instead of silently replacing the first one's results. A symlinked ``FILE`` is resolved and its target
replaced; a device or FIFO (``/dev/null``, ``-o /dev/stdout``) and ``-`` are written as streams, never replaced.
Paths that are not valid UTF-8 (bytes undecodable in the filesystem encoding, held as surrogate escapes) are
written as JSON ``\\udcXX`` escapes, so every line stays valid UTF-8 and ``json.loads`` gives the path back.
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


def _dumps(record: dict[str, Any]) -> str:
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped (non-UTF-8) path: escape it rather than fail
        line = json.dumps(record, ensure_ascii=True)
    return line


def _check_params(side: Path, params: dict[str, Any], output: Path) -> None:
    """Refuse to resume ``output`` with parameters other than those recorded in ``side`` (``FILE.run.json``)."""
    if not side.exists():
        return
    try:
        old = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable: nothing to compare with
    if isinstance(old, dict):
        differ = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        if differ:
            raise UsageError(f"--resume: {', '.join(differ)} differ from the run that wrote {output} "
                             f"(see {side.name}); rerun with the same options or another --output")


def _keys(paths: list[str]) -> set[str]:
    """Done inputs as written, plus their resolved paths (in-memory ``<image i>`` names stay as they are)."""
    from clipkit.runner import resolved

    return set(paths) | {resolved(p) for p in paths if not p.startswith("<image ")}


def _is_stream(output: Path) -> bool:
    """``-`` or an existing non-regular file (device, FIFO): written as a stream, never replaced."""
    if str(output) == "-":
        return True
    try:
        return output.exists() and not output.resolve().is_file() and not output.resolve().is_dir()
    except OSError:
        return False


def check_output(fmt: str | None, output: str | Path | None, resume: bool) -> None:
    """Usage errors of the output options, before any work: a folder as ``--output``, ``--resume`` without one
    or with a table, an unknown format."""
    if output is None and (sys.stdout is None or sys.stdout.closed):
        raise UsageError("stdout is closed: give --output FILE")
    resolve_format(fmt, output, sys.stdout)
    if output is not None and Path(output).is_dir():
        raise UsageError(f"--output {output} is a folder: name a file (pictures go to --out-dir)")
    if resume and output is not None and _is_stream(Path(output)):
        raise UsageError(f"--resume cannot read back {output}: it is a stream, not a file")
    if resume and output is None:
        raise UsageError("--resume needs --output FILE (the output of the interrupted run)")
    if resume and resolve_format(fmt, output, sys.stdout) == "table":
        raise UsageError("--resume cannot read back a table: use --format jsonl, json or csv")


class ResultSink:
    """Collects results and writes them in one format; ``close()`` finishes the output and returns the exit code."""

    def __init__(self, fmt: str | None = None, output: str | Path | None = None, *, resume: bool = False,
                 stream: TextIO | None = None, title: str = "results", params: dict[str, Any] | None = None):
        check_output(fmt, output, resume)
        self.stream = stream or sys.stdout
        self.output = Path(output) if output is not None else None
        self.format = resolve_format(fmt, output, self.stream)
        self._own_stream = self.output is not None and _is_stream(self.output) and str(output) != "-"
        if self.output is not None and _is_stream(self.output):  # "-", a device or a FIFO: written like stdout
            if self._own_stream:
                self.stream = open(self.output, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
            self.output = None
        elif self.output is not None:
            self.output = self.output.resolve()  # a symlink: write its target (atomically), keep the link
        self.title = title
        self.records: list[dict[str, Any]] = []  # stdout json/csv/table only
        self.kept_rows: list[dict[str, Any]] = []  # CSV rows of a finished run being resumed
        self.failed = 0
        self.done: set[str] = set()
        self._journal: TextIO | None = None
        if self.output is not None:
            side = self.output.with_name(self.output.name + ".run.json")
            params = json.loads(json.dumps(params, default=str)) if params is not None else None
            if params is not None and resume:
                _check_params(side, params, self.output)  # before the journal is touched
            self._open_journal(resume)
            if params is not None:
                atomic_write_text(side, json.dumps(params, indent=1, sort_keys=True, ensure_ascii=False) + "\n")

    @property
    def partial_path(self) -> Path:
        assert self.output is not None
        return self.output.with_name(self.output.name + ".partial")

    def _previous(self) -> list[dict[str, Any]]:
        """Successful records of the run being resumed (journal first, else the finished output)."""
        assert self.output is not None
        journal = self.partial_path
        source = journal if journal.exists() and journal.stat().st_size else self.output
        if not source.exists():
            return []
        text = source.read_text(encoding="utf-8", errors="surrogateescape")
        if source == self.output and self.format == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            self.kept_rows = [r for r in rows if not r.get("error")]
            self.done = _keys([r["path"] for r in self.kept_rows if "path" in r])
            return []
        if source == self.output and self.format == "json":
            try:
                records = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--resume: {source} is not a JSON list of results ({exc})") from None
        else:
            records = []
            for line in text.splitlines():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the torn last line of an interrupted run
        kept = [r for r in records if isinstance(r, dict) and "path" in r and "error" not in r]
        self.done = _keys([str(r["path"]) for r in kept])
        return kept

    def _open_journal(self, resume: bool) -> None:
        import fcntl

        self.partial_path.parent.mkdir(parents=True, exist_ok=True)
        journal = open(self.partial_path, "a+", encoding="utf-8")  # noqa: SIM115 (closed in close())
        try:
            fcntl.flock(journal.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            journal.close()
            raise UsageError(f"--output {self.output} is being written by another clipkit run (its journal "
                             f"{self.partial_path.name} is locked): wait for it or pick another file") from None
        kept = self._previous() if resume else []
        journal.seek(0)
        journal.truncate()
        journal.write("".join(_dumps(r) + "\n" for r in kept))
        journal.flush()
        self._journal = journal

    def add(self, result: Any) -> None:
        """Record one result (or error record); JSONL lines are written immediately."""
        record = result.to_dict()
        if "error" in record:
            self.failed += 1
            print(f"error: {record['path']}: {record['error']}", file=sys.stderr)
        if self._journal is not None:
            self._journal.write(_dumps(record) + "\n")
            self._journal.flush()
        elif self.format == "jsonl":
            self.stream.write(_dumps(record) + "\n")
            self.stream.flush()
        else:
            self.records.append(record)

    def close(self) -> int:
        """Finish the output; return the exit code (0 all inputs succeeded, 1 any failed)."""
        if self._journal is not None:
            self._journal.flush()
            os.fsync(self._journal.fileno())
            self._journal.close()
            if self.format == "jsonl":
                os.replace(self.partial_path, self.output)  # type: ignore[arg-type]
            else:
                text = self.partial_path.read_text(encoding="utf-8")
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
                atomic_write_text(self.output, self._render(records))  # type: ignore[arg-type]
                self.partial_path.unlink()
        elif self.format != "jsonl":
            self.stream.write(self._render(self.records))
            self.stream.flush()
        if self._own_stream:
            self.stream.close()
        return 1 if self.failed else 0

    def abort(self) -> None:
        """End an interrupted run: the journal is flushed and left as ``FILE.partial``; ``FILE`` is untouched."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _render(self, records: list[dict[str, Any]]) -> str:
        if self.format == "json":
            return json.dumps(records, indent=2, ensure_ascii=False) + "\n"
        if self.format == "csv":
            rows = self.kept_rows + [row for record in records for row in flat_rows(record)]
            columns = list(dict.fromkeys(key for row in rows for key in row))
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return buffer.getvalue()
        if self.format == "table":
            return self._table(records)
        return "".join(_dumps(r) + "\n" for r in records)

    def _table(self, records: list[dict[str, Any]]) -> str:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=self.title, show_lines=False)
        table.add_column("image", overflow="fold")
        table.add_column("result", overflow="fold")
        for record in records:
            table.add_row(str(record.get("path", "")), _summary(record))
        buffer = io.StringIO()
        console = Console(file=buffer, width=None if self.output is None and self.stream.isatty() else 120,
                          force_terminal=self.output is None and self.stream.isatty())
        console.print(table)
        return buffer.getvalue()


def _summary(record: dict[str, Any]) -> str:
    """One table cell for a result record (scores rounded for reading)."""
    if "error" in record:
        return f"[red]error: {record['error']}[/red]"
    if "labels" in record:
        return ", ".join(f"{x['label']} {x['score']:.3f}" for x in record["labels"][:5]) or "(none)"
    if "classes" in record:
        return ", ".join(f"{c['label']} {c['fraction']:.1%}" for c in record["classes"][:5]) or "(none)"
    if "detections" in record:
        return ", ".join(f"{d['label']} {d['score']:.2f}" for d in record["detections"][:6]) or "(none)"
    if "phrases" in record:
        cells = [f"{p['phrase']} {b['score']:.2f}" for p in record["phrases"] for b in p["boxes"]]
        return ", ".join(cells[:6]) or "(none)"
    if "loss" in record:
        where = record.get("files", {}).get("svg", "(not written)")
        return f"{where} (loss {record['loss']:.4f}, {record['iterations']} it, {record['seconds']:.1f} s)"
    return json.dumps({k: v for k, v in record.items() if k != "path"})[:200]
