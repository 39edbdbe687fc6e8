"""Ship a trained GroupViT run as the bundled shapes-groupvit: float16 weights in the Hugging Face layout, the
run's clipkit.json (training record + lineage) and train_log.jsonl, then calibrate its background threshold on
validation scenes (stream 2), measure it on held-out test scenes (stream 0) and write the model card.

    PYTHONPATH=$PWD python bench/group_ship.py runs/gv-f224 clipkit/assets/shapes-groupvit
    PYTHONPATH=$PWD python bench/group_ship.py runs/gv-c352/ckpt-000200 clipkit/assets/shapes-groupvit --val-n 300
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch


def _train_log(run: Path, steps_done: int | None) -> str:
    """The run's log; for a kept checkpoint (``RUN/ckpt-NNNNNN``, which has none) its parent's, up to that step."""
    if (run / "train_log.jsonl").exists():
        return (run / "train_log.jsonl").read_text()
    lines = (run.parent / "train_log.jsonl").read_text().splitlines(keepends=True)
    return "".join(ln for ln in lines if json.loads(ln).get("step", 0) <= (steps_done or 0))


def main() -> None:
    from clipkit.groupvit.weights import load_groupvit, save_hf_dir
    from clipkit.training.groupvit_card import VAL_N, finish_model, run_command

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a train-groupvit output folder (float32)")
    ap.add_argument("dest", type=Path, help="the folder to write (replaced)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-n", type=int, default=VAL_N, help="validation scenes for the calibration")
    ap.add_argument("--card-only", action="store_true", help="only re-render DEST's command and README.md from its "
                    "clipkit.json and metrics.json (no training folder is read, nothing is re-measured)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.card_only:
        from clipkit.training.groupvit_card import model_card

        meta = json.loads((args.dest / "clipkit.json").read_text())
        metrics = json.loads((args.dest / "metrics.json").read_text())
        meta["command"] = run_command(meta["training"])  # the card's command lines follow run_command's rules
        (args.dest / "clipkit.json").write_text(json.dumps(meta, indent=2) + "\n")
        (args.dest / "README.md").write_text(model_card(meta, metrics, meta["command"]))
        return
    model = load_groupvit(args.run)
    if args.dest.exists():
        shutil.rmtree(args.dest)
    save_hf_dir(model, args.dest, dtype=torch.float16)
    meta = json.loads((args.run / "clipkit.json").read_text())
    (args.dest / "clipkit.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.dest / "train_log.jsonl").write_text(_train_log(args.run, meta["training"].get("steps_done")))
    metrics = finish_model(args.dest, command=run_command(meta["training"]), val_n=args.val_n)
    assert metrics is not None
    print(json.dumps({"bg_thresh": metrics["bg_thresh"], "val_miou": metrics["val"]["miou_by_bg_thresh"],
                      "test_miou": metrics["test"]["miou"], "test_purity": metrics["test"]["purity"],
                      "test_groups_used": metrics["test"]["groups_used"]}, indent=2))


if __name__ == "__main__":
    main()
