"""The shapes-groupvit model card: a chain of continued runs is written out as reproducible commands."""

from __future__ import annotations

import json

from clipkit.training.groupvit_card import model_card, run_command


def test_chain_of_runs_lists_every_command_in_order(tmp_path):
    first = {"out": "runs/a", "init_clip": "shapes-clip", "init": None, "steps": 6000, "minutes": 22.0,
             "batch_size": 32, "lr": 5e-4, "threads": 1, "steps_done": 2618, "seconds": 1320.0, "group_loss": 1.0}
    second = {"out": "runs/b", "init": "runs/a", "steps": 20000, "minutes": 170.0, "batch_size": 32, "lr": 5e-4,
              "scenes": 64000, "steps_done": 6000, "seconds": 1800.0}
    third = {"out": "runs/c", "init": "runs/b/ckpt-006000", "image_size": 192, "freeze_grouping": True,
             "steps": 12000, "minutes": 75.0, "lr": 5e-4, "steps_done": 12000, "seconds": 2700.0}
    card = model_card({"lineage": [first, second], "training": third}, None, "unused")
    lines = [ln for ln in card.splitlines() if ln[:3] in ("1. ", "2. ", "3. ")]
    assert len(lines) == 3
    assert "--init-clip shapes-clip" in lines[0] and "time budget reached" in lines[0]
    assert "--init runs/a" in lines[1] and "the checkpoint the next run starts from" in lines[1]
    assert "--image-size 192" in lines[2] and lines[2].count("--freeze-grouping") == 1
    assert run_command(third).startswith("clipkit world train-groupvit runs/c --init runs/b/ckpt-006000")
    json.dumps(card)  # plain text
    fourth = {"out": "runs/d", "init": "runs/c", "image_size": 352, "scene_size": 224, "freeze_stages": 1}
    assert "--image-size 352 --scene-size 224 --freeze-stages 1" in run_command(fourth)
    assert "--freeze-stages" not in run_command(third)
    # a run on another scene stream, whose kept checkpoint a later run starts from, says both
    fifth = {"out": "runs/e", "init": "runs/d", "seed": 3, "keep_every": 500}
    assert "--seed 3 --keep-every 500" in run_command(fifth)
    assert "--seed" not in run_command({**fifth, "seed": 1}) and "--keep-every" not in run_command(third)


def test_lineage_is_carried_from_the_init_folder(tmp_path):
    from clipkit.training.groupvit import _lineage

    (tmp_path / "clipkit.json").write_text(json.dumps({
        "lineage": [{"out": "runs/a"}], "training": {"out": "runs/b", "config": {"vision": {}}}}))
    assert _lineage(tmp_path) == [{"out": "runs/a"}, {"out": "runs/b"}]
    assert _lineage(tmp_path / "missing") == []


def test_calibration_sweep_picks_the_best_top_k_and_threshold(tmp_path):
    """``finish_model`` calibrates (top-k, bg_thresh) jointly on validation: the pair it reports is the best."""
    from conftest import tiny_groupvit

    from clipkit.training.groupvit_sweep import miou_at, sweep_world

    sweep = sweep_world(tiny_groupvit(), ["a {}"], seed=2, n=2, size=64, thresholds=(0.1, 0.9), top_ks=(1, 48))
    table = {(int(k), float(t)): v for k, row in sweep["miou_by_top_k"].items() for t, v in row.items()}
    assert set(table) == {(1, 0.1), (1, 0.9), (48, 0.1), (48, 0.9)}
    best = (sweep["best_top_k"], sweep["best_bg_thresh"])
    assert table[best] == max(table.values()) == miou_at(sweep, best[1])
    assert miou_at(sweep, 0.9, 1) == table[1, 0.9]
    assert set(sweep["miou_no_background_by_top_k"]) == {"1", "48"}
