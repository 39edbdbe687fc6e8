"""The one shell: every method gets the same inputs, batching, error records, -o, --resume and pipe behaviour.

A throw-away seventh method (tests/plugins/mean_colour.py: a config and a predictor, nothing else) is registered
and run through the CLI; then the six real methods go through the same checks on the tiny random model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
import mean_colour

from clipkit.cli.common import ClipkitGroup
from clipkit.cli.factory import method_command

PLUGIN = Path(__file__).parent / "plugins" / "mean_colour.py"


@pytest.fixture
def registered():
    """The seventh method in the method table for one test (the Python API looks it up there)."""
    from clipkit.methods import METHODS, register

    register(mean_colour.SPEC)
    yield
    METHODS.pop(mean_colour.SPEC.name, None)


def _app():
    import typer

    app = typer.Typer(cls=ClipkitGroup)
    app.command("mean-colour")(method_command(mean_colour.SPEC))
    app.command("version")(lambda: None)  # a second command keeps "mean-colour" a subcommand
    return app


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"im{i:02d}.png"
        Image.new("RGB", (20, 16), (10 * i, 100, 200)).save(path)
        paths.append(path)
    return paths


def _lines(text: str) -> list[dict]:
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def test_seventh_method_gets_inputs_batches_errors_output_and_resume(tmp_path, registered):
    paths = _images(tmp_path / "in", 6)
    (tmp_path / "in" / "zz_bad.png").write_bytes(b"not a png")
    out = tmp_path / "colours.jsonl"
    runner = CliRunner()
    mean_colour.MeanColourPredictor.batches.clear()
    res = runner.invoke(_app(), ["mean-colour", str(tmp_path / "in"), "-o", str(out), "--batch-size", "4",
                                 "--scale", "2"])
    assert res.exit_code == 1, res.output  # one bad file
    records = _lines(out.read_text())
    assert [r["path"] for r in records] == [*map(str, paths), str(tmp_path / "in" / "zz_bad.png")]
    assert "error" in records[-1] and "zz_bad.png" in res.stderr
    blue = records[0]["labels"][0]
    assert blue["label"] == "blue" and blue["score"] == pytest.approx(2 * 200 / 255, abs=1e-5)
    assert mean_colour.MeanColourPredictor.batches == [4, 2]  # the bad file never reaches the predictor
    assert not Path(str(out) + ".partial").exists()
    # --resume: done inputs are skipped (deleting one proves it is not read again), the failed one retried
    paths[0].unlink()
    _images(tmp_path / "in2", 1)[0].rename(tmp_path / "in" / "new.png")
    res = runner.invoke(_app(), ["mean-colour", str(tmp_path / "in"), "-o", str(out), "--resume"])
    assert res.exit_code == 2 and "config differ" in res.stderr  # another --scale: not the same run
    res = runner.invoke(_app(), ["mean-colour", str(tmp_path / "in"), "-o", str(out), "--resume", "--scale", "2"])
    assert res.exit_code == 1, res.output  # zz_bad.png is retried and fails again
    again = _lines(out.read_text())
    assert [r["path"] for r in again if "error" not in r][:6] == [str(p) for p in paths]
    assert [r["path"] for r in again[6:]] == [str(tmp_path / "in" / "new.png"), str(tmp_path / "in" / "zz_bad.png")]
    # a usage error is reported before any work, exit 2
    res = runner.invoke(_app(), ["mean-colour", str(tmp_path / "in"), "--scale", "-1"])
    assert res.exit_code == 2 and "--scale: Input should be greater than 0" in res.stderr


def test_seventh_method_in_the_python_api_names_in_memory_failures_by_index(registered):
    from clipkit.api import run

    results = list(run("mean-colour", [np.full((4, 4, 3), 255, np.uint8), "missing.png", 5]))
    assert [r.path for r in results] == ["<image 0>", "missing.png", "<image 2>"]
    assert results[0].scores[0] == pytest.approx(1.0)
    assert results[1].error == "no such file" and "unsupported input type int" in results[2].error


def _closed_pipe(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``python ARGS``, read one line of its stdout, close the pipe (as ``| head -1`` does)."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read() if proc.stderr else b""
    proc.wait(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, first, stderr)


def test_seventh_method_closed_pipe_ends_quietly(tmp_path):
    _images(tmp_path / "in", 300)
    done = _closed_pipe([str(PLUGIN), "mean-colour", str(tmp_path / "in"), "-f", "jsonl", "-b", "1"])
    assert json.loads(done.stdout)["path"].endswith("im00.png")
    assert done.returncode == 0 and done.stderr == b""


# ---------------------------------------------------------------------------------------- the six real methods
ARGS = {
    "classify": ["-l", "red,blue", "-t", "none"],
    "segment": ["-l", "red,blue", "-t", "none"],
    "group": ["-l", "red,blue", "-t", "none", "--groups", "8,3"],
    "detect": ["-l", "red,blue", "-t", "none"],
    "ground": ["--caption", "a red circle", "-t", "none"],
    "sketch": ["--strokes", "2", "--iterations", "2", "--seeds", "1", "--canvas", "32"],
}


@pytest.mark.parametrize("method", list(ARGS))
def test_every_method_streams_resumes_and_records_errors(method, tiny_model_dir, tmp_path):
    from clipkit.cli.app import app

    paths = _images(tmp_path / "in", 3)
    (tmp_path / "in" / "zz_bad.png").write_bytes(b"not a png")
    out = tmp_path / "out.csv"
    extra = ["-d", str(tmp_path / "pics")] if method != "classify" else []
    base = [method, str(tmp_path / "in"), "-m", str(tiny_model_dir), *ARGS[method], *extra, "-q"]
    res = CliRunner().invoke(app, [*base, "-o", str(out), "--batch-size", "2"])
    assert res.exit_code == 1, res.output
    import csv

    rows = list(csv.DictReader(out.open()))
    assert {r["path"] for r in rows} == {*map(str, paths), str(tmp_path / "in" / "zz_bad.png")}
    assert next(r["error"] for r in rows if r["path"].endswith("zz_bad.png"))
    paths[0].unlink()  # done: --resume must not read it again
    res = CliRunner().invoke(app, [*base, "-o", str(out), "--resume"])
    rows = list(csv.DictReader(out.open()))
    assert {r["path"] for r in rows if not r.get("error")} == set(map(str, paths))


@pytest.mark.parametrize("method", list(ARGS))
def test_every_method_ends_quietly_on_a_closed_pipe(method, tiny_model_dir, tmp_path):
    _images(tmp_path / "in", 3)
    extra = ["-d", str(tmp_path / "pics")] if method != "classify" else []
    done = _closed_pipe(["-m", "clipkit", method, str(tmp_path / "in"), "-m", str(tiny_model_dir), *ARGS[method],
                         *extra, "-f", "jsonl", "-b", "1", "-j", "0"])
    assert json.loads(done.stdout)["path"].endswith("im00.png")
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()


def test_usage_errors_come_before_torch(tmp_path):
    """A bad option, template set, device or model is a one-line error, exit 2, without importing torch."""
    code = ("import sys\nfrom clipkit.cli.app import main\nsys.argv = ['clipkit'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules)\n")
    image = _images(tmp_path, 1)[0]
    for args, message in [(["--format", "xml"], "unknown format 'xml'"),
                          (["-t", "nope"], "unknown template set 'nope'"),
                          (["-t", "a {x} {}"], "no other braces"),
                          (["--device", "cuda"], "CUDA is not available"),
                          (["-m", "NoSuchNet-1"], "unknown model 'NoSuchNet-1'"),
                          (["-m", "./missing-folder"], "no such folder or file"),
                          (["--top-k", "0"], "--top-k: Input should be greater than or equal to 1"),
                          (["--threshold", "0.5"], "--threshold applies only with --multi-label"),
                          (["-o", str(tmp_path)], "is a folder")]:
        done = subprocess.run([sys.executable, "-c", code, "classify", str(image), "-l", "a,b", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "EXIT 2 False", (args, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and message in done.stderr, (args, done.stderr)


def test_collate_puts_a_batch_of_pixels_in_one_block():
    """Decoding workers hand over one shared-memory block per batch: same-shape pixel tensors become views of
    one stacked tensor (values unchanged); errors and odd shapes pass through as they are."""
    import torch

    from clipkit.methods import Sample
    from clipkit.results import ErrorRecord
    from clipkit.runner import _collate

    a, b, odd = torch.rand(3, 4, 4), torch.rand(3, 4, 4), torch.rand(3, 5, 4)
    batch = _collate([Sample("a", pixels=a.clone()), ErrorRecord("bad", "broken"), Sample("b", pixels=b.clone())])
    assert torch.equal(batch[0].pixels, a) and torch.equal(batch[2].pixels, b)
    assert batch[0].pixels.untyped_storage().data_ptr() == batch[2].pixels.untyped_storage().data_ptr()
    assert isinstance(batch[1], ErrorRecord)
    mixed = _collate([Sample("a", pixels=a), Sample("c", pixels=odd)])
    assert mixed[0].pixels is a and mixed[1].pixels is odd
