"""User mistakes get a one-line error naming the fix, never "unexpected …" (issue: no data lost, item 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clipkit.cli.app import app

runner = CliRunner()


def _image(tmp_path: Path) -> Path:
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    return tmp_path / "a.png"


@pytest.mark.parametrize(("weights", "message"), [(b"garbage", "could not load"),
                                                   (None, "could not load")])
def test_bad_weight_files_are_model_errors(tmp_path, weights, message):
    path = tmp_path / "w.safetensors"
    if weights is None:
        path = Path("/etc/passwd")  # a text file given as weights
    else:
        path.write_bytes(weights)
    res = runner.invoke(app, ["classify", str(_image(tmp_path)), "-l", "a,b", "-m", "ViT-B-32", "-p", str(path)])
    assert res.exit_code == 1 and message in res.output and "unexpected" not in res.output


def test_closed_stdin_and_stdout_are_usage_errors(tiny_model_dir, tmp_path):
    image = _image(tmp_path)
    base = [sys.executable, "-m", "clipkit", "classify", "-m", str(tiny_model_dir), "-l", "a,b"]
    res = subprocess.run([*base, "-"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                         close_fds=True, preexec_fn=lambda: __import__("os").close(0))
    assert res.returncode == 2 and "stdin is closed" in res.stderr
    res = subprocess.run([*base, str(image)], capture_output=False, stderr=subprocess.PIPE, text=True,
                         timeout=120, preexec_fn=lambda: __import__("os").close(1))
    assert res.returncode == 2 and "stdout is closed" in res.stderr


def test_eval_names_a_missing_image_and_a_broken_referring_file_spares_other_evals(tiny_model_dir, tmp_path):
    from clipkit.world.export import export

    data = export(tmp_path / "data", n=2, seed=1, size=64, max_objects=2)
    (data / "referring.json").write_text("{ not json")
    res = runner.invoke(app, ["eval", "segment", str(data), "-m", str(tiny_model_dir), "-f", "json", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "ground", str(data), "-m", str(tiny_model_dir), "-q"])
    assert res.exit_code == 2 and "referring.json" in res.output
    missing = sorted((data / "images").iterdir())[0]
    missing.unlink()
    res = runner.invoke(app, ["eval", "segment", str(data), "-m", str(tiny_model_dir), "-q"])
    assert res.exit_code == 2 and f"{missing}: no such file" in res.output


def test_world_export_refuses_a_used_folder_unless_overwrite(tmp_path):
    out = tmp_path / "ds"
    assert runner.invoke(app, ["world", "export", str(out), "--n", "3", "--size", "64", "-q"]).exit_code == 0
    res = runner.invoke(app, ["world", "export", str(out), "--n", "1", "--size", "64", "-q"])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(app, ["world", "export", str(out), "--n", "1", "--size", "64", "-q", "--overwrite"])
    assert res.exit_code == 0 and len(list((out / "images").iterdir())) == 1  # no stale images left
    (out / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["world", "export", str(out), "--n", "1", "--size", "64", "-q", "--overwrite"])
    assert res.exit_code == 2 and "notes.txt" in res.output and (out / "notes.txt").exists()
