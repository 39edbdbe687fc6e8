"""Load official modules from fetched repositories *at generation time only* (never committed, never imported
by the tests).

Each official file is read with ``git show <commit>:<path>`` from a bare mirror (``fetch`` tool layout:
``<mirrors>/<owner>+<name>/repo``) into a temporary folder and imported from there; when a module cannot be
imported without a heavy framework (MaskCLIP's mmcv/mmseg), only the needed function is taken from the file's
syntax tree and executed with plain ``torch`` in its namespace.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tempfile
import types
from pathlib import Path

MIRRORS = Path("/work/.mirror")
_TMP = Path(tempfile.mkdtemp(prefix="clipkit-golden-official-"))


def git_dir(repo: str, mirrors: Path | None = None) -> Path:
    """The bare git directory of ``owner/name`` in the mirror folder."""
    return (mirrors or MIRRORS) / repo.replace("/", "+") / "repo"


def head(repo: str, mirrors: Path | None = None) -> str:
    """The commit the mirror's HEAD points at (recorded in SOURCES.md)."""
    out = subprocess.run(["git", "-C", str(git_dir(repo, mirrors)), "rev-parse", "HEAD"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def source(repo: str, path: str, commit: str = "HEAD", mirrors: Path | None = None) -> str:
    """The text of ``path`` at ``commit`` in the official repository."""
    out = subprocess.run(["git", "-C", str(git_dir(repo, mirrors)), "show", f"{commit}:{path}"],
                         check=True, capture_output=True, text=True)
    return out.stdout


def load_module(name: str, repo: str, path: str, commit: str = "HEAD", mirrors: Path | None = None):
    """Import one official file as module ``name`` (it must import only installed packages)."""
    file = _TMP / f"{name}.py"
    file.write_text(source(repo, path, commit, mirrors))
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_package(name: str, repo: str, folder: str, files: list[str], commit: str = "HEAD",
                 mirrors: Path | None = None) -> None:
    """Copy ``files`` of an official package folder into a fresh package ``name`` (empty ``__init__``) so its
    relative imports resolve without running the package's own ``__init__``."""
    pkg = _TMP / name
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for f in files:
        (pkg / f).write_text(source(repo, f"{folder}/{f}", commit, mirrors))
    if str(_TMP) not in sys.path:
        sys.path.insert(0, str(_TMP))


def function_from(repo: str, path: str, qualname: str, namespace: dict, commit: str = "HEAD",
                  mirrors: Path | None = None) -> types.FunctionType:
    """The official function ``qualname`` (``"Class.method"`` or ``"func"``), compiled from its own source
    text alone and executed in ``namespace`` (the names it uses, e.g. ``torch`` and ``F``)."""
    tree = ast.parse(source(repo, path, commit, mirrors))
    parts = qualname.split(".")
    body = tree.body
    node = None
    for part in parts:
        node = next(n for n in body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == part)
        body = node.body
    node.decorator_list = []
    module = ast.Module(body=[node], type_ignores=[])
    ns = dict(namespace)
    exec(compile(module, f"<{repo}:{path}:{qualname}>", "exec"), ns)
    return ns[parts[-1]]
