"""Nothing runs away: tiny files that expand and huge photos stay within a memory bound (issue: no data lost).

Each case runs the CLI in a subprocess watched by a guard thread that kills it above a hard RSS limit, so a
regression fails the test instead of eating the machine; the peak is read from ``ru_maxrss`` of the child.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

LIMIT_MB = 2000  # the bound for any input at defaults


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_guarded(args: list[str], limit_mb: float = LIMIT_MB, timeout: float = 600):
    """Run ``python -m clipkit ARGS``; kill it if its RSS passes ``limit_mb``. Returns (proc, stdout, killed)."""
    proc = subprocess.Popen([sys.executable, "-m", "clipkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = []

    def guard() -> None:
        while proc.poll() is None:
            if _rss_mb(proc.pid) > limit_mb:
                killed.append(_rss_mb(proc.pid))
                proc.kill()
            time.sleep(0.05)

    threading.Thread(target=guard, daemon=True).start()
    out, err = proc.communicate(timeout=timeout)
    return proc, out, err, killed


def peak_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


@pytest.mark.parametrize("method", ["classify", "segment", "group", "detect", "ground"])
def test_a_one_pixel_high_strip_is_an_error_record_not_gigabytes(method, tiny_model_dir, tmp_path):
    Image.new("RGB", (3000, 1), (200, 0, 0)).save(tmp_path / "strip.png")  # 9 KB that a naive resize blows up
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "ok.png")
    text = ["--caption", "a red thing"] if method == "ground" else ["-l", "red,blue"]
    proc, out, err, killed = run_guarded([method, str(tmp_path / "strip.png"), str(tmp_path / "ok.png"), "-m",
                                          str(tiny_model_dir), *text, "-t", "none", "-f", "jsonl", "-q"])
    assert not killed, f"RSS passed {LIMIT_MB} MB"
    records = [json.loads(x) for x in out.splitlines()]
    assert proc.returncode == 1 and "aspect ratio" in records[0]["error"], err
    assert "error" not in records[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["segment", "detect"])
def test_an_8000px_photo_is_processed_at_the_working_resolution(method, tiny_model_dir, tmp_path):
    """An 8000x8000 JPEG stays under the bound; results come back at the original size."""
    ramp = np.linspace(0, 255, 8000, dtype=np.uint8)
    Image.fromarray(np.stack([np.broadcast_to(ramp, (8000, 8000))] * 3, -1)).save(tmp_path / "big.jpg",
                                                                                  quality=70)
    proc, out, err, killed = run_guarded([method, str(tmp_path / "big.jpg"), "-m", str(tiny_model_dir), "-l",
                                          "red,blue", "-t", "none", "-f", "jsonl", "-q", "-d", str(tmp_path / "o")])
    assert not killed and proc.returncode == 0, (killed, err)
    [record] = [json.loads(x) for x in out.splitlines()]
    if method == "segment":
        assert Image.open(tmp_path / "o" / "big.mask.png").size == (8000, 8000)
    else:
        assert all(d["box"]["xmax"] <= 8000 for d in record["detections"])
