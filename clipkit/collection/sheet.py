"""Contact sheets of search results: the query on top, then the hits as thumbnails, best first, row by row.

Each tile shows the image fitted into ``tile`` × ``tile`` pixels with its rank, cosine score and file name
under it; an image that cannot be read any more becomes a grey tile saying so. Files are named by the artefact
rule ``DIR/<stem>.<kind>.png``: ``<stem>`` is the query made file-safe (``a_red_circle.search.png``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from clipkit.draw import _font
from clipkit.writers import save_image

CAPTION = 30  # pixels under each tile for "rank  score" and the file name
HEADER = 28


def stem(query: str, kind: str) -> str:
    """A file-safe stem for a query: words joined by ``_`` (at most 60 characters), an image query's file stem;
    a query that keeps nothing readable gets 8 hex digits of its hash."""
    text = Path(query).stem if kind == "image" else query
    safe = re.sub(r"[^\w-]+", "_", text).strip("_")[:60]
    return safe or hashlib.sha256(query.encode()).hexdigest()[:8]


def contact_sheet(record: dict[str, Any], tile: int = 128, columns: int = 5) -> Image.Image:
    """An RGB image of one search record (``{"query", "type", "results": [{"path", "score"}]}``)."""
    from clipkit.images import load_image

    hits = record["results"]
    columns = max(1, min(columns, len(hits) or 1))
    rows = max(1, -(-len(hits) // columns))
    sheet = Image.new("RGB", (columns * tile, HEADER + rows * (tile + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(12)
    draw.text((6, 7), f"{record['type']}: {record['query']}"[:120], fill="black", font=_font(14))
    for rank, hit in enumerate(hits):
        x, y = (rank % columns) * tile, HEADER + (rank // columns) * (tile + CAPTION)
        try:
            thumb = load_image(hit["path"], max_side=2 * tile, short_side=tile)
            thumb.thumbnail((tile - 4, tile - 4))
            sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        except Exception:  # the file moved or broke since it was embedded: say so in the tile
            draw.rectangle((x + 2, y + 2, x + tile - 3, y + tile - 3), fill=(200, 200, 200))
            draw.text((x + 8, y + tile // 2 - 6), "cannot read", fill="black", font=font)
        draw.text((x + 4, y + tile + 1), f"{rank + 1}  {hit['score']:.3f}", fill="black", font=font)
        draw.text((x + 4, y + tile + 15), Path(hit["path"]).name[-(tile // 7):], fill=(90, 90, 90), font=font)
    return sheet


def write_sheets(records: list[dict[str, Any]], out_dir: str | Path) -> None:
    """Write one contact sheet per record into ``out_dir``; each record gets ``"files": {"sheet": path}``."""
    used: set[str] = set()
    for record in records:
        name = stem(record["query"], record["type"])
        if name in used:  # two queries with one stem: tell them apart by the query's hash
            name = f"{name}_{hashlib.sha256(record['query'].encode()).hexdigest()[:8]}"
        used.add(name)
        path = Path(out_dir) / f"{name}.search.png"
        save_image(path, contact_sheet(record))
        record["files"] = {"sheet": str(path)}
