"""`clipkit eval segment` and `clipkit world train-lseg` end to end on a tiny export and the tiny model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clipkit.errors import UsageError
from clipkit.evaluation.segmentation import evaluate_segment


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from clipkit.world.export import export

    return export(tmp_path_factory.mktemp("data"), n=3, seed=5, size=48, max_objects=2)


def test_evaluate_segment_on_an_export(tiny_model, tiny_export):
    out = evaluate_segment(tiny_export, tiny_model, variant="plain")
    assert out["n_images"] == 3 and out["method"] == "plain"
    assert 0.0 <= out["miou"] <= 1.0 and "background" in out["per_class"]
    # the IoUs reported are the ones averaged
    assert out["miou"] == pytest.approx(sum(out["per_class"].values()) / len(out["per_class"]), abs=1e-3)
    one = evaluate_segment(tiny_export, tiny_model, labels=["red circle", "blue square"], limit=1)
    assert one["n_images"] == 1 and set(one["per_class"]) <= {"background", "red circle", "blue square"}
    per_image = evaluate_segment(tiny_export, tiny_model, labels_per_image=True, background="none")
    assert per_image["method"] == "naclip (labels per image)"
    # only categories present in an image can be predicted there, so the classes scored are exactly the truth's
    from clipkit.world.dataset import read_export

    export = read_export(tiny_export)
    truth = {"background"} | {export.categories[int(k)] for p in export.images
                              for k in set(export.semantic_mask(p).ravel().tolist()) if k}
    assert set(per_image["per_class"]) == truth
    with pytest.raises(UsageError, match="labels not in the dataset"):
        evaluate_segment(tiny_export, tiny_model, labels=["zebra"])


def test_eval_not_an_export_is_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(UsageError, match="not a shapes-world export"):
        evaluate_segment(tmp_path, tiny_model)


def test_cli_eval_segment_json(tiny_model_dir, tiny_export):
    from clipkit.cli.app import app

    res = CliRunner().invoke(app, ["eval", "segment", str(tiny_export), "-m", str(tiny_model_dir),
                                   "--labels-from-data", "--format", "json", "--variant", "clearclip"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) >= {"miou", "per_class"} and data["method"] == "clearclip"
    res = CliRunner().invoke(app, ["eval", "segment", str(tiny_export), "-m", str(tiny_model_dir),
                                   "--format", "table", "--limit", "1"])
    assert res.exit_code == 0 and "mIoU" in res.stdout


def test_train_lseg_writes_a_loadable_head(tiny_model_dir, tmp_path):
    from clipkit import lseg
    from clipkit.registry import load_model
    from clipkit.training.lseg import LSegTrainConfig, train_lseg

    cfg = LSegTrainConfig(model=str(tiny_model_dir), steps=3, batch_size=2, features=8, eval_scenes=2,
                          threads=None)
    metrics = train_lseg(cfg, tmp_path / "head", quiet=True, command="clipkit world train-lseg head")
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["scenes"] == 2
    assert {p.name for p in (tmp_path / "head").iterdir()} >= {"lseg_head.safetensors", "lseg_config.json",
                                                                 "README.md"}
    assert "clipkit world train-lseg head" in (tmp_path / "head" / "README.md").read_text()
    head = lseg.load_head(tmp_path / "head", load_model(str(tiny_model_dir), device="cpu"))
    assert head.cfg.meta["metrics"]["miou"] == metrics["miou"]

    # --init continues that head: the first step starts from its weights, not a fresh initialisation
    import dataclasses

    import torch

    again = train_lseg(dataclasses.replace(cfg, init=str(tmp_path / "head"), steps=1, lr=1e-9), tmp_path / "next",
                       quiet=True)
    cont = lseg.load_head(tmp_path / "next", load_model(str(tiny_model_dir), device="cpu"))
    assert all(torch.allclose(a.float(), b.float(), atol=1e-3) for a, b in  # weights (not BN statistics)
               zip(head.parameters(), cont.parameters(), strict=True))
    assert again["miou"] == pytest.approx(metrics["miou"], abs=0.05)
    assert "Continued from the head" in (tmp_path / "next" / "README.md").read_text()
