"""Every entry a user would think of as an image gets a result or an error record; nothing hangs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from clipkit.cli.app import app


def _run(model_dir: Path, *args: object):
    return CliRunner().invoke(app, ["classify", *map(str, args), "-m", str(model_dir), "-l", "red,blue", "-t",
                                    "none", "-q", "-f", "jsonl"])


def test_broken_links_loops_fifos_and_heic_get_error_records(tiny_model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "good.png")
    (folder / "broken.png").symlink_to(folder / "gone.png")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.png")  # would block a naive reader forever
    (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    res = _run(tiny_model_dir, folder)
    assert res.exit_code == 1, res.output
    records = {Path(r["path"]).name: r for r in map(json.loads, res.stdout.splitlines())}
    assert set(records) == {"good.png", "broken.png", "loop.jpg", "pipe.png", "phone.heic"}
    assert "labels" in records["good.png"]
    assert records["broken.png"]["error"] == "no such file"
    assert "cannot read" in records["loop.jpg"]["error"]
    assert "not a regular file" in records["pipe.png"]["error"]
    # without pillow-heif the record says to install it; with it, this truncated file is a decode error
    import importlib.util

    heic = records["phone.heic"]["error"]
    assert ("pillow-heif" in heic) == (importlib.util.find_spec("pillow_heif") is None), heic


def test_more_than_255_labels_write_a_16_bit_mask(tiny_model_dir, tmp_path):
    Image.new("RGB", (24, 16), (200, 20, 20)).save(tmp_path / "a.png")
    labels = ",".join(f"thing {i}" for i in range(300))
    res = CliRunner().invoke(app, ["segment", str(tmp_path / "a.png"), "-m", str(tiny_model_dir), "-l", labels,
                                   "-t", "none", "-d", str(tmp_path / "o"), "-q", "-f", "jsonl", "--no-overlay"])
    assert res.exit_code == 0, res.output
    mask = Image.open(tmp_path / "o" / "a.mask.png")
    assert mask.mode.startswith("I") and mask.size == (24, 16)
    assert np.asarray(mask).max() <= 300


def test_head_path_loads_exactly_the_file_named(tiny_model, tmp_path):
    """`--head DIR/other.safetensors` loads that file, not DIR/lseg_head.safetensors."""
    import torch

    from clipkit import lseg

    torch.manual_seed(0)
    head = lseg.new_head(tiny_model, clip_model="tiny", features=8, dims=[8, 8, 8, 8])
    lseg.save_head(head, tmp_path / "h")
    (tmp_path / "h" / "lseg_head.safetensors").rename(tmp_path / "h" / "other.safetensors")
    loaded = lseg.load_head(tmp_path / "h" / "other.safetensors", tiny_model)
    key = next(iter(head.state_dict()))
    torch.testing.assert_close(loaded.state_dict()[key].float(), head.state_dict()[key].float(), atol=1e-2,
                               rtol=1e-2)


def test_artefact_names_never_collide(tiny_model_dir, tmp_path):
    """a/x.png and b/x.png get distinct stems; an input named x.overlay.png does not overwrite x's overlay."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16), (200, 0, 0)).save(tmp_path / folder / "x.png")
    Image.new("RGB", (16, 16), (0, 0, 200)).save(tmp_path / "a" / "x.overlay.png")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["segment", str(tmp_path / "a"), str(tmp_path / "b"), "-m", str(tiny_model_dir),
                                   "-l", "red,blue", "-t", "none", "-d", str(out), "-q", "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    files = [r["files"] for r in map(json.loads, res.stdout.splitlines())]
    written = [p for f in files for p in f.values()]
    assert len(written) == len(set(written)) == 6 and all(Path(p).is_file() for p in written)


def test_threads_must_be_positive(tiny_model_dir, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    for bad in ("0", "-1"):
        res = _run(tiny_model_dir, tmp_path / "a.png", "--threads", bad)
        assert res.exit_code == 2
