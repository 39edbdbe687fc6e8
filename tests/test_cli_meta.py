"""The command line as a whole: help for every command, README coverage, fast start-up, version, models."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipkit._version import __version__
from clipkit.cli.app import app, groups

runner = CliRunner()
README = (Path(__file__).parents[1] / "README.md").read_text()


def all_commands() -> list[list[str]]:
    out = [[c.name] for c in app.registered_commands]
    for name, sub in groups.items():
        out += [[name, c.name] for c in sub.registered_commands]
    return out


def test_the_six_methods_and_models_are_registered():
    names = {tuple(c) for c in all_commands()}
    assert {("classify",), ("models",)} <= names


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_with_an_example_and_is_in_the_readme(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output) > 200
    assert re.search(rf"clipkit {' '.join(command)}\b", README), f"README.md does not show `clipkit {command}`"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"clipkit {__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["classify", "--help"]])
def test_help_and_version_do_not_import_torch(argv):
    code = (
        "import sys\n"
        f"sys.argv = ['clipkit', *{argv!r}]\n"
        "from clipkit.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "NO-TORCH"


def test_models_lists_open_clip_tags_and_marks_local_weights():
    result = runner.invoke(app, ["models", "--search", "ViT-B-32", "--format", "jsonl"])
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    openai = [r for r in rows if r["model"] == "ViT-B-32" and r["pretrained"] == "openai"]
    assert openai and openai[0]["local"] is False and openai[0]["kind"] == "open_clip"
    local = runner.invoke(app, ["models", "--local", "--format", "json"])
    assert all(row["local"] for row in json.loads(local.stdout))


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: " ".join(c))
def test_help_examples_name_files_that_exist(command):
    """Every `examples/...` path in a command's --help exists in the repository."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=400)
    root = Path(__file__).resolve().parents[1]
    for path in re.findall(r"(examples/[\w./-]+)", result.output):
        assert (root / path.rstrip(".")).exists(), f"{' '.join(command)} --help names missing {path}"


def test_models_local_lists_every_bundled_kind():
    result = runner.invoke(app, ["models", "--local", "-f", "jsonl"])
    rows = {json.loads(x)["model"]: json.loads(x)["kind"] for x in result.stdout.splitlines()}
    bundled = {"shapes-clip": "clip", "lseg-shapes": "lseg-head", "shapes-groupvit": "groupvit"}
    assert {k: rows.get(k) for k in bundled} == bundled
