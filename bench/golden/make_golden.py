"""Regenerate the golden fixtures in tests/golden/ from the official implementations.

    PYTHONPATH=. python bench/golden/make_golden.py [dense] [groupvit] [--mirrors /work/.mirror]

Needs the official repositories as bare mirrors (``<mirrors>/<owner>+<name>/repo``, e.g. from the ``fetch`` tool
or ``git clone --mirror``); the tests never do. Nothing fetched is written to the tree: only weights of tiny
random models and the official outputs. Prints, per fixture, clipkit's max |difference| to the official output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import official  # noqa: E402

OUT = HERE.parents[1] / "tests" / "golden"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", default=["dense", "groupvit"], help="dense and/or groupvit")
    ap.add_argument("--mirrors", type=Path, default=official.MIRRORS, help="folder of fetched bare mirrors")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    official.MIRRORS = args.mirrors
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        if part == "dense":
            import golden_dense

            record = golden_dense.make(args.out)
        elif part == "groupvit":
            import golden_groupvit

            record = golden_groupvit.make(args.out)
        else:
            raise SystemExit(f"unknown part {part!r}")
        print(json.dumps({part: record}, indent=1))


if __name__ == "__main__":
    main()
