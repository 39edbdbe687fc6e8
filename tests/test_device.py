"""The device manager's CPU memory policy: freed activation memory is kept for the next batch (glibc malloc).

Its effect is a speed figure, measured in ``bench/per_image.py`` (page faults and ms per image); these tests pin
the contract: which thresholds are set, when, and when the user's choice is left alone.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from clipkit import device

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the policy tunes glibc's malloc")


class _FakeLibc:
    """``ctypes.CDLL(None)`` as seen by the policy: records mallopt calls."""

    def __init__(self, is_glibc: bool = True) -> None:
        self.calls: list[tuple[int, int]] = []
        if is_glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture
def fresh_policy(monkeypatch):
    monkeypatch.setattr(device, "_ALLOCATOR", [])
    for name in ("CLIPKIT_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_mmap_and_trim_thresholds_are_pinned_at_glibcs_own_ceiling_once(fresh_policy):
    import ctypes

    libc = _FakeLibc()
    fresh_policy.setattr(ctypes, "CDLL", lambda name: libc)
    assert device.keep_freed_memory() and device.keep_freed_memory()
    # M_MMAP_THRESHOLD (-3) first, 32 MiB; then M_TRIM_THRESHOLD (-1), 64 MiB; and only once a process
    assert libc.calls == [(-3, 32 << 20), (-1, 64 << 20)]


@pytest.mark.parametrize("env", [{"CLIPKIT_MALLOC": "system"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_a_users_own_choice_is_left_alone(fresh_policy, env):
    import ctypes

    libc = _FakeLibc()
    fresh_policy.setattr(ctypes, "CDLL", lambda name: libc)
    for name, value in env.items():
        fresh_policy.setenv(name, value)
    assert device.keep_freed_memory() is False and libc.calls == []


def test_other_c_libraries_are_left_alone(fresh_policy):
    import ctypes

    libc = _FakeLibc(is_glibc=False)  # musl, macOS: no gnu_get_libc_version
    fresh_policy.setattr(ctypes, "CDLL", lambda name: libc)
    assert device.keep_freed_memory() is False and libc.calls == []


@glibc
def test_a_run_tunes_the_real_allocator(tmp_path):
    """The runner applies the policy when a run starts (model loading and ``--help`` do not)."""
    from PIL import Image

    Image.new("RGB", (64, 48), "red").save(tmp_path / "a.png")
    code = ("from clipkit import device\n"
            "import clipkit\n"
            "from clipkit.registry import load\n"
            "m = load(None, kind='clip')\n"
            "before = list(device._ALLOCATOR)\n"
            f"clipkit.classify([{str(tmp_path / 'a.png')!r}], ['red', 'blue'], model=m, workers=0)\n"
            "print(before, device._ALLOCATOR)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "CLIPKIT_M"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["[]", "[True]"]
