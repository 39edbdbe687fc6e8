"""Mutation testing of the maths modules with mutmut 3, each module group against its own test files.

    PYTHONPATH=. python bench/golden/mutants.py [GROUP ...] [--work /tmp/mut] [--children 2]

(``make mutants`` runs every group under ``nice -n 15``.) mutmut rewrites files, so each group runs in a fresh
copy of the tree under ``--work/<group>`` (``clipkit/``, ``tests/`` and ``pyproject.toml`` with a
``[tool.mutmut]`` section added there, never here). Prints one Markdown row per group (mutants, killed,
survived, no tests, timeouts, score = killed+timeout / (total − skipped)) and writes every survivor's diff
to ``--work/<group>/survivors.txt`` for review. Needs ``pip install mutmut`` (the ``mutation`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: group -> (modules to mutate, test files that judge them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "dense": (["clipkit/dense.py", "clipkit/sliding.py"],
              ["tests/test_golden_dense.py", "tests/test_constants_dense.py", "tests/test_dense.py",
               "tests/test_sliding.py"]),
    "pixelwise": (["clipkit/pixelwise.py", "clipkit/attention.py"],
                  ["tests/test_pixelwise.py", "tests/test_attention.py"]),
    "groupvit-layers": (["clipkit/groupvit/layers.py"],
                        ["tests/test_golden_groupvit.py", "tests/test_constants_groupvit.py",
                         "tests/test_groupvit_parity.py", "tests/test_groupvit_model.py"]),
    "groupvit-weights": (["clipkit/groupvit/weights.py"],
                         ["tests/test_golden_groupvit.py", "tests/test_golden_groupvit_files.py",
                          "tests/test_groupvit_parity.py", "tests/test_groupvit_weights.py"]),
    "groupvit-segment": (["clipkit/groupvit/segment.py"],
                         ["tests/test_golden_groupvit.py", "tests/test_constants_group.py",
                          "tests/test_group_segment.py"]),
    "regions": (["clipkit/regions.py"], ["tests/test_constants_regions.py", "tests/test_detect.py"]),
    "detect": (["clipkit/methods/detect.py"], ["tests/test_constants_detect.py", "tests/test_detect.py"]),
    "ground": (["clipkit/methods/ground.py"], ["tests/test_constants_ground.py", "tests/test_ground.py",
                                              "tests/test_ground_reclip.py", "tests/test_ground_expressions.py",
                                              "tests/test_ground_mutants.py", "tests/test_head_proposals.py"]),
    "reclip": (["clipkit/reclip.py"], ["tests/test_ground_reclip.py", "tests/test_ground_expressions.py",
                                    "tests/test_reclip_calibration.py", "tests/test_reclip_mutants.py"]),
    # test_sketch.py's other tests run whole optimisations (seconds per mutant): the loss-level ones only
    "clipasso-loss": (["clipkit/clipasso/loss.py"],
                      ["tests/test_constants_sketch.py",
                       "tests/test_sketch.py::test_loss_uses_shared_augmentations_and_frozen_clip",
                       "tests/test_sketch.py::test_resnet_loss_uses_layer2_and_layer3"]),
}


#: module -> first line of its predictor (the thin class at the bottom that the runner calls): from there on
#: nothing is mutated (mutmut's ``# pragma: no mutate block`` is inserted in the copy). It builds the text
#: embeddings once and passes options; the maths it calls is scored.
WRAPPERS = {
    "clipkit/methods/detect.py": "class DetectPredictor:",
    "clipkit/methods/ground.py": "def parse_caption(",
}


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(group: str, work: Path) -> Path:
    """A fresh copy of the tree for ``group`` with its mutmut configuration."""
    modules, tests = GROUPS[group]
    dest = work / group
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "clipkit", dest / "clipkit", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    config = (ROOT / "pyproject.toml").read_text() + (
        "\n[tool.mutmut]\n"
        'source_paths = ["clipkit"]\n'
        f"only_mutate = {_toml_list(modules)}\n"
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]\n'
    )
    (dest / "pyproject.toml").write_text(config)
    for module in modules:
        if module in WRAPPERS:
            path = dest / module
            text = path.read_text()
            marker = WRAPPERS[module]
            assert text.count(f"\n{marker}") == 1, f"{module}: wrapper marker {marker!r} not found once"
            path.write_text(text.replace(f"\n{marker}", f"\n# pragma: no mutate block\n{marker}"))
    return dest


def run_group(group: str, work: Path, children: int) -> dict:
    dest = prepare(group, work)
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "CLIPKIT_OFFLINE": "1"}
    mutmut = [sys.executable, "-m", "mutmut"]
    log = (dest / "mutmut.log").open("w")
    subprocess.run([*mutmut, "run", "--max-children", str(children)], cwd=dest, env=env, stdout=log,
                   stderr=subprocess.STDOUT, check=False)
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT,
                   check=False)
    stats = json.loads((dest / "mutants" / "mutmut-cicd-stats.json").read_text())
    res = subprocess.run([*mutmut, "results"], cwd=dest, env=env, capture_output=True, text=True, check=False)
    survivors = [line.split(":")[0].strip() for line in res.stdout.splitlines() if ": survived" in line]
    (dest / "survivors.json").write_text(json.dumps(survivors))
    subprocess.run([sys.executable, "-c", _SHOW], cwd=dest, env=env, check=False, stdout=subprocess.DEVNULL,
                   stderr=log)
    return stats


# every survivor's diff in one process (``mutmut show`` per mutant costs a second each)
_SHOW = """
import json
from pathlib import Path
from mutmut.__main__ import find_mutant
from mutmut.mutation.diff_apply import get_diff_for_mutant
with open("survivors.txt", "w") as out:
    for name in json.loads(Path("survivors.json").read_text()):
        out.write(f"### {name}\\n{get_diff_for_mutant(name, path=find_mutant(name).path)}\\n")
"""


def score(stats: dict) -> float:
    tested = int(stats.get("total", 0)) - int(stats.get("skipped", 0))
    return 100.0 * (int(stats.get("killed", 0)) + int(stats.get("timeout", 0))) / max(tested, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="*", default=list(GROUPS), help=f"any of {', '.join(GROUPS)}")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mut"))
    ap.add_argument("--children", type=int, default=2, help="mutants tested in parallel")
    args = ap.parse_args(argv)
    print("| group | modules | mutants | killed | survived | no tests | timeout | score |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for group in args.groups:
        s = run_group(group, args.work, args.children)
        print(f"| {group} | {', '.join(f'`{m}`' for m in GROUPS[group][0])} | {s.get('total', 0)} | "
              f"{s.get('killed', 0)} | {s.get('survived', 0)} | {s.get('no_tests', 0)} | {s.get('timeout', 0)} | "
              f"{score(s):.1f} % |", flush=True)


if __name__ == "__main__":
    main()
