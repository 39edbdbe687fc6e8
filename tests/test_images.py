"""The image source: input expansion, every PIL mode to RGB, errors as records, ordered batching."""

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from clipkit import images
from clipkit.errors import ImageError, UsageError


def test_expand_dirs_globs_stdin_and_files_from(image_dir, tmp_path, monkeypatch):
    found = images.expand_inputs([str(image_dir)])
    assert [p.split("imgs/")[1] for p in found] == ["a.png", "b.jpg", "broken.jpg", "sub/c.png"]
    assert images.expand_inputs([str(image_dir / "*.png")]) == [str(image_dir / "a.png")]
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{image_dir / 'b.jpg'}\n\n"))
    assert images.expand_inputs(["-"]) == [str(image_dir / "b.jpg")]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image_dir / 'a.png'}\nmissing.png\n")
    assert images.expand_inputs([], files_from=listing) == [str(image_dir / "a.png"), "missing.png"]


def test_no_inputs_is_a_usage_error():
    with pytest.raises(UsageError, match="no input images"):
        images.expand_inputs([])


def _rgb(path):
    image = images.load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)
    Image.fromarray(rgba, "RGBA").convert("LA").save(tmp_path / "la.png")
    assert tuple(_rgb(tmp_path / "la.png")[1, 1]) == (255, 255, 255)


def test_palette_with_transparency_cmyk_16bit_float_and_bilevel(tmp_path):
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert tuple(_rgb(tmp_path / "p.png")[0, 0]) == (255, 255, 255)
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert _rgb(tmp_path / "c.jpg")[0, 0, 0] > 200
    Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)).save(tmp_path / "i16.png")
    assert tuple(_rgb(tmp_path / "i16.png")[0, 0]) == (255, 255, 255)
    assert tuple(np.asarray(images.to_rgb(Image.fromarray(np.full((2, 2), 0.5, np.float32), "F")))[0, 0]) == (
        128, 128, 128)
    Image.new("1", (2, 2), 1).save(tmp_path / "b.png")
    assert tuple(_rgb(tmp_path / "b.png")[0, 0]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert images.load_image(tmp_path / "r.jpg").size == (20, 40)


def test_bad_files_raise_one_line_image_errors(tmp_path, monkeypatch):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not an image"):
        images.load_image(tmp_path / "bad.jpg")
    with pytest.raises(ImageError, match="no such file"):
        images.load_image(tmp_path / "missing.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="decompression-bomb"):
        images.load_image(tmp_path / "big.png")


def test_batches_keep_input_order_and_record_errors_with_workers(image_dir):
    from clipkit.results import ErrorRecord
    from clipkit.runner import _batches, collect_inputs

    items = collect_inputs(str(image_dir))
    batches = list(_batches(items, lambda im: torch.tensor(np.asarray(im).mean()), True, 3, 2))
    entries = [e for b in batches for e in b]
    assert [e.key if hasattr(e, "key") else e.path for e in entries] == [i.key for i in items]
    assert [isinstance(e, ErrorRecord) for e in entries] == [False, False, True, False]
    assert entries[2].path.endswith("broken.jpg")
    assert entries[0].image.size == (48, 40)


def test_atomic_writes_respect_the_umask(tmp_path):
    import os

    from clipkit.writers import atomic_write_text

    path = atomic_write_text(tmp_path / "out" / "a.json", "{}")
    assert path.read_text() == "{}" and os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left behind


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
