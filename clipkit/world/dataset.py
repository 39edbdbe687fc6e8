"""Read a shapes-world export (written by :func:`clipkit.world.export.export`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


class ExportError(ValueError):
    """The folder is not a readable shapes-world export."""


@dataclass
class ShapesExport:
    """An export folder.

    images: absolute image paths, in image-id order. categories: id -> name ("red circle"), ids 1..C.
    instances: the COCO instances dict. captions: file name -> caption. referring: the referring.json list,
    each entry with an added "path" (absolute image path) and a "type" (plain, attribute, relation,
    superlative, absent; "plain" for older exports); "box" is None for absent expressions.
    """

    root: Path
    images: list[Path]
    categories: dict[int, str]
    instances: dict
    captions: dict[str, str]
    referring: list[dict]
    _by_name: dict[str, dict] = field(default_factory=dict, repr=False)
    referring_error: str | None = None  # why referring.json could not be read (only `eval ground` needs it)

    def __len__(self) -> int:
        return len(self.images)

    def semantic_mask(self, path: str | Path) -> np.ndarray:
        """uint8/uint16 [H, W] label map of image ``path`` (0 = background, k = category id k)."""
        name = Path(path).name
        if name not in self._by_name:
            raise KeyError(f"{name} is not an image of the export {self.root}")
        return np.array(Image.open(self.root / "masks" / Path(name).with_suffix(".png").name))

    def image_info(self, path: str | Path) -> dict:
        """The COCO image record of ``path``."""
        return self._by_name[Path(path).name]

    def annotations(self, path: str | Path) -> list[dict]:
        """COCO annotations (bbox XYWH, RLE segmentation, category_id) of image ``path``."""
        img_id = self._by_name[Path(path).name]["id"]
        return [a for a in self.instances["annotations"] if a["image_id"] == img_id]

    def boxes_xyxy(self, path: str | Path) -> tuple[np.ndarray, list[str]]:
        """([N, 4] float32 XYXY pixel boxes, [N] category names) of image ``path``."""
        anns = self.annotations(path)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return xyxy, [self.categories[a["category_id"]] for a in anns]


def load_dataset_image(path: str | Path) -> Image.Image:
    """An export's image, decoded; a missing or broken file is an :class:`ExportError` that names it."""
    from clipkit.errors import ImageError
    from clipkit.images import load_image

    try:
        return load_image(path)
    except ImageError as exc:
        raise ExportError(f"{path}: {exc}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from None


def read_export(folder: str | Path) -> ShapesExport:
    """Load an export folder; raises :class:`ExportError` with the missing piece named."""
    root = Path(folder).expanduser().resolve()
    inst_path = root / "instances.json"
    if not inst_path.is_file():
        raise ExportError(f"{root} is not a shapes-world export (no instances.json); "
                          "create one with `clipkit world export`")
    instances = _read_json(inst_path)
    by_name = {im["file_name"]: im for im in instances["images"]}
    images = [root / "images" / im["file_name"] for im in sorted(instances["images"], key=lambda r: r["id"])]
    categories = {int(c["id"]): c["name"] for c in instances["categories"]}
    captions: dict[str, str] = {}
    cap_path = root / "captions.json"
    if cap_path.is_file():
        caps = _read_json(cap_path)
        id_to_name = {im["id"]: im["file_name"] for im in caps["images"]}
        captions = {id_to_name[a["image_id"]]: a["caption"] for a in caps["annotations"]}
    referring: list[dict] = []
    referring_error = None
    ref_path = root / "referring.json"
    if ref_path.is_file():
        try:  # only `eval ground` needs it: a broken file must not stop the other evaluations
            refs = _read_json(ref_path)
            # exports written before expression types existed hold only "the <colour> <shape>": type plain
            referring = [{"type": "plain", **r, "path": str(root / "images" / r["image"])} for r in refs]
        except (ExportError, KeyError, TypeError) as exc:
            referring_error = f"{ref_path}: {exc}"
    return ShapesExport(root=root, images=images, categories=categories, instances=instances,
                        captions=captions, referring=referring, _by_name=by_name, referring_error=referring_error)
