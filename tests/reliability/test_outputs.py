"""Nothing clobbered: special files, symlinks, locks, interrupted runs and non-UTF-8 names (issue: no data lost).

Every case runs `clipkit classify` on the tiny random model; the sink and runner are shared by all six commands
(tests/test_shell.py checks that each command goes through them).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from clipkit.cli.app import app


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"im{i:03d}.png"
        Image.new("RGB", (16, 16), (i % 256, 50, 200)).save(path)
        out.append(path)
    return out


def _classify(model_dir: Path, *args: object):
    return CliRunner().invoke(app, ["classify", *map(str, args), "-m", str(model_dir), "-l", "red,blue", "-t",
                                    "none", "-q"])


def test_output_to_a_fifo_streams_and_keeps_the_fifo(tiny_model_dir, tmp_path):
    """A FIFO (like /dev/null or a device) is written as a stream, never replaced by a regular file."""
    _images(tmp_path / "in", 3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    res = _classify(tiny_model_dir, tmp_path / "in", "-o", fifo)
    reader.join(timeout=60)
    assert res.exit_code == 0, res.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert len([json.loads(x) for x in got[0].splitlines()]) == 3
    assert not (tmp_path / "fifo.partial").exists()


def test_output_through_a_symlink_writes_its_target(tiny_model_dir, tmp_path):
    _images(tmp_path / "in", 2)
    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    res = _classify(tiny_model_dir, tmp_path / "in", "-o", link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 2


def test_a_second_run_into_a_locked_output_is_refused(tiny_model_dir, tmp_path):
    """Two runs into one file: the second is a usage error (exit 2), the first run's journal is untouched."""
    import fcntl

    _images(tmp_path / "in", 2)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.partial"
    journal.write_text('{"path": "x", "labels": []}\n')
    with open(journal, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        res = _classify(tiny_model_dir, tmp_path / "in", "-o", out)
    assert res.exit_code == 2 and "being written by another clipkit run" in res.output
    assert journal.read_text() == '{"path": "x", "labels": []}\n' and not out.exists()


def test_non_utf8_file_names_round_trip_and_never_stop_a_run(tiny_model_dir, tmp_path):
    folder = tmp_path / "in"
    _images(folder, 2)
    odd = folder / os.fsdecode(b"caf\xe9.png")  # not UTF-8: held as a surrogate escape
    Image.new("RGB", (16, 16)).save(odd)
    out = tmp_path / "out.jsonl"
    res = _classify(tiny_model_dir, folder, "-o", out)
    assert res.exit_code == 0, res.output
    raw = out.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 throughout
    paths = [json.loads(line)["path"] for line in raw.decode().splitlines()]
    assert str(odd) in paths and all(os.path.exists(p) for p in paths)
    res = _classify(tiny_model_dir, folder, "-o", out, "--resume")  # and --resume gets past it
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_interrupted_run_leaves_only_a_partial_that_resume_completes(tiny_model_dir, tmp_path):
    """Ctrl-C: FILE never appears incomplete; FILE.partial holds what was done and --resume finishes the run.

    The child gets SIGINT's default disposition back: a suite started in the background of a non-interactive
    shell (``make test &``) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    _images(tmp_path / "in", 200)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "clipkit", "classify", str(tmp_path / "in"), "-m", str(tiny_model_dir), "-l",
           "red,blue", "-t", "none", "-o", str(out), "-b", "1", "-j", "0", "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / "out.jsonl.partial"
    deadline = time.time() + 120
    while time.time() < deadline and (not partial.exists() or len(partial.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"--resume" in err
    assert not out.exists() and partial.exists()
    done = len(partial.read_text().splitlines())
    assert 5 <= done < 200
    res = subprocess.run([*cmd, "--resume"], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr
    paths = [json.loads(x)["path"] for x in out.read_text().splitlines()]
    assert len(paths) == len(set(paths)) == 200 and not partial.exists()


def test_output_folder_or_stream_resume_are_usage_errors_before_work(tiny_model_dir, tmp_path):
    _images(tmp_path / "in", 1)
    res = _classify(tiny_model_dir, tmp_path / "in", "-o", tmp_path)
    assert res.exit_code == 2 and "is a folder" in res.output
    res = _classify(tiny_model_dir, tmp_path / "in", "-o", "/dev/null", "--resume")
    assert res.exit_code == 2 and "is a stream" in res.output
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_resume_of_a_finished_json_or_csv_keeps_its_results(tiny_model_dir, tmp_path, fmt):
    paths = _images(tmp_path / "in", 3)
    out = tmp_path / f"out.{fmt}"
    assert _classify(tiny_model_dir, tmp_path / "in", "-o", out).exit_code == 0
    before = out.read_text()
    paths[0].unlink()  # done: not read again
    _images(tmp_path / "more", 1)[0].rename(tmp_path / "in" / "new.png")
    assert _classify(tiny_model_dir, tmp_path / "in", "-o", out, "--resume").exit_code == 0
    after = out.read_text()
    assert "new.png" in after and str(paths[0]) in after and str(paths[0]) in before


def test_resume_keys_on_the_resolved_path_and_refuses_other_parameters(tiny_model_dir, tmp_path, monkeypatch):
    """The same images given as absolute paths after a relative run are not done twice; resuming with other
    labels is a usage error (the run's parameters are recorded in FILE.run.json)."""
    paths = _images(tmp_path / "in", 3)
    out = tmp_path / "out.jsonl"
    monkeypatch.chdir(tmp_path)
    assert _classify(tiny_model_dir, "in", "-o", out).exit_code == 0
    res = _classify(tiny_model_dir, *paths, "-o", out, "--resume")  # absolute paths this time
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 3
    assert json.loads((tmp_path / "out.jsonl.run.json").read_text())["text"] == ["red", "blue"]
    res = CliRunner().invoke(app, ["classify", "in", "-m", str(tiny_model_dir), "-l", "red,green", "-t", "none",
                                   "-o", str(out), "--resume", "-q"])
    assert res.exit_code == 2 and "text differ from the run" in res.output
    assert len(out.read_text().splitlines()) == 3


def test_decoding_workers_die_with_a_killed_run(tiny_model_dir, tmp_path):
    """kill -9 of the main process leaves no decoding worker behind (nor a traceback from one)."""
    _images(tmp_path / "in", 400)
    proc = subprocess.Popen([sys.executable, "-m", "clipkit", "classify", str(tmp_path / "in"), "-m",
                             str(tiny_model_dir), "-l", "red,blue", "-t", "none", "-b", "2", "-j", "2", "-f",
                             "jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    children: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and len(children) < 2:
        try:
            text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
            children = [int(c) for c in text.split()]
        except OSError:
            pass
        time.sleep(0.05)
    assert children, "no decoding workers started"
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(1.0)
    alive = [c for c in children if Path(f"/proc/{c}").exists()
             and "zombie" not in Path(f"/proc/{c}/status").read_text().lower()]
    assert not alive, f"workers {alive} outlived the run"


def test_a_full_device_is_one_clear_error_and_stays_a_device(tiny_model_dir, tmp_path):
    _images(tmp_path / "in", 2)
    res = _classify(tiny_model_dir, tmp_path / "in", "-o", "/dev/full")
    assert res.exit_code == 1 and "cannot write the results: No space left on device" in res.output
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
