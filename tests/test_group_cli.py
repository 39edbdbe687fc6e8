"""``clipkit group`` / ``clipkit eval group`` end to end on a random-weight GroupViT folder (logic, not accuracy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_groupvit
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from clipkit.cli.app import app
from clipkit.groupvit.weights import save_hf_dir

runner = CliRunner()


@pytest.fixture(scope="module")
def groupvit_dir(tmp_path_factory):
    """A random-init GroupViT in the Hugging Face layout, as `--model PATH` takes it."""
    folder = tmp_path_factory.mktemp("gv")
    save_hf_dir(tiny_groupvit(), folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    for i, colour in enumerate(["red", "blue"]):
        im = Image.new("RGB", (64, 48), (128, 128, 128))
        ImageDraw.Draw(im).ellipse((10 + i * 10, 8, 40 + i * 10, 38), fill=colour)
        im.save(folder / f"scene{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_group_writes_labels_overlay_and_stage_maps(groupvit_dir, images, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["group", str(images / "scene0.png"), str(images / "scene1.png"), "-m",
                              str(groupvit_dir), "-l", "red circle,blue circle", "-d", str(out), "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert [Image.open(images / f"scene{i}.png").size for i in range(2)] == [(64, 48)] * 2
    assert len(lines) == 2 and lines[0]["path"].endswith("scene0.png")
    assert lines[0]["method"] == "groupvit" and len(lines[0]["stages"]) == 2
    assert {"group", "label", "score", "fraction"} <= set(lines[0]["groups"][0])
    for stem in ("scene0", "scene1"):
        label = Image.open(out / f"{stem}.mask.png")
        assert label.mode == "P" and label.size == (64, 48)
        assert np.asarray(label).max() <= 2  # 0 = background, 1..2 = the labels
        for kind in ("overlay", "stage1", "stage2"):
            assert Image.open(out / f"{stem}.{kind}.png").size == (64, 48)
    # stage 1 splits the image into at least as many groups as stage 2 has
    assert lines[0]["stages"][0] >= lines[0]["stages"][1] >= 1


def test_scores_are_written_only_when_asked(groupvit_dir, images, tmp_path):
    """``--scores`` writes each pixel's per-label scores (its group's) beside the mask; without it none are
    formed, and the JSON's class scores are the same either way (the mean over the label's pixels)."""
    args = ["group", str(images / "scene0.png"), "-m", str(groupvit_dir), "-l", "red circle,blue circle",
            "--bg-thresh", "none", "-f", "jsonl"]
    lean = runner.invoke(app, [*args, "-d", str(tmp_path / "lean")])
    kept = runner.invoke(app, [*args, "-d", str(tmp_path / "kept"), "--scores"])
    assert lean.exit_code == 0 and kept.exit_code == 0, lean.output + kept.output
    assert not (tmp_path / "lean" / "scene0.scores.npz").exists()
    with np.load(tmp_path / "kept" / "scene0.scores.npz") as npz:
        scores, labels = npz["scores"], list(npz["labels"])
    assert labels == ["red circle", "blue circle"] and scores.shape == (2, 48, 64)
    mask = np.asarray(Image.open(tmp_path / "kept" / "scene0.mask.png"))
    classes = json.loads(kept.stdout)["classes"]
    assert classes == json.loads(lean.stdout)["classes"] and classes
    for c in classes:
        k = labels.index(c["label"]) + 1
        assert c["score"] == pytest.approx(float(scores[k - 1][mask == k].astype(np.float64).mean()), abs=1e-3)


def test_a_decoding_worker_preprocesses_with_the_same_result(groupvit_dir, images):
    """A GroupViT's resize and normalisation run in the decoding workers (the predictor's picklable transform);
    the maps are the in-process ones."""
    import clipkit
    from clipkit.groupvit.segment import Pixels

    paths = [str(images / f"scene{i}.png") for i in range(2)]
    from clipkit.registry import load_groupvit_model

    model = load_groupvit_model(str(groupvit_dir))
    here = clipkit.group(paths, ["red circle", "blue circle"], model=model, workers=0)
    worker = clipkit.group(paths, ["red circle", "blue circle"], model=model, workers=1, batch_size=1)
    for a, b in zip(here, worker, strict=True):
        np.testing.assert_array_equal(a.label_map, b.label_map)
        np.testing.assert_array_equal(a.extras["stage1"], b.extras["stage1"])
    from clipkit.methods.group import GroupPredictor

    assert isinstance(GroupPredictor(model, ["a"]).transform, Pixels)


def test_bad_input_becomes_an_error_record(groupvit_dir, images):
    res = runner.invoke(app, ["group", str(images), "-m", str(groupvit_dir), "-l", "a,b", "-f", "jsonl"])
    assert res.exit_code == 1
    records = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert len(records) == 3
    assert any("error" in r and r["path"].endswith("broken.png") for r in records)


@pytest.mark.parametrize("args, message", [
    (["--bg-thresh", "high"], "--bg-thresh: must be a number"),
    (["--bg-thresh", "1.5"], "--bg-thresh: must lie in [0, 1]"),
    (["--top-k", "0"], "--top-k: Input should be greater than or equal to 1"),
    (["--groups", "16,4"], "--groups applies only to the training-free fallback"),
    (["--stride", "16"], "--stride applies only with --window"),
    (["--window", "18"], "--window and --stride must be positive multiples of the patch size 4"),
    (["--window", "16", "--stride", "6"], "multiples of the patch size"),
])
def test_bad_options_are_usage_errors(groupvit_dir, images, args, message):
    res = runner.invoke(app, ["group", str(images / "scene0.png"), "-m", str(groupvit_dir), "-l", "a,b", *args])
    assert res.exit_code == 2
    assert message in res.stderr


def test_no_background_option_labels_every_pixel(groupvit_dir, images):
    from clipkit.api import group
    from clipkit.registry import load_groupvit_model

    model = load_groupvit_model(str(groupvit_dir))
    [res] = group(str(images / "scene0.png"), "red circle,blue circle", model=model, bg_thresh="none")
    assert (res.label_map > 0).all()
    assert res.extras["stage1"].shape == res.label_map.shape == (48, 64)


def test_eval_group_reports_miou_and_purity(groupvit_dir, tmp_path):
    pytest.importorskip("clipkit.world")
    from clipkit.world.export import export

    data = export(tmp_path / "data", n=3, seed=0, size=64)
    res = runner.invoke(app, ["eval", "group", str(data), "-m", str(groupvit_dir), "-f", "json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert 0.0 <= result["miou"] <= 1.0 and "background" in result["per_class"]
    assert set(result["purity"]) == {"stage1", "stage2"} and result["n_images"] == 3


def test_fallback_groups_with_a_plain_open_clip_model(tiny_model_dir, images, tmp_path):
    """Any open_clip ViT works: training-free grouping of its dense patch embeddings, same outputs."""
    out = tmp_path / "fb"
    res = runner.invoke(app, ["group", str(images / "scene0.png"), "-m", str(tiny_model_dir), "-l",
                              "red circle,blue circle", "--groups", "8,3", "-d", str(out), "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    [line] = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert line["method"].startswith("dense-grouping")
    assert 1 <= line["stages"][1] <= 3 and line["stages"][1] <= line["stages"][0] <= 8
    for kind in ("mask", "overlay", "stage1", "stage2"):
        assert Image.open(out / f"scene0.{kind}.png").size == (64, 48)
    bad = runner.invoke(app, ["group", str(images / "scene0.png"), "-m", str(tiny_model_dir), "-l", "a,b",
                              "--groups", "3,8"])
    assert bad.exit_code == 2 and "--groups" in bad.stderr


def test_bg_thresh_none_reaches_the_method(groupvit_dir, images):
    """`--bg-thresh none` means no background: every pixel gets a label."""
    res = runner.invoke(app, ["group", str(images / "scene0.png"), "-m", str(groupvit_dir), "-l", "a,b",
                              "--bg-thresh", "none", "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    [line] = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert abs(sum(c["fraction"] for c in line["classes"]) - 1.0) < 1e-3


def test_sliding_windows_write_the_same_artefacts(groupvit_dir, images, tmp_path):
    """`--window/--stride`: the official slide mode; stage maps show each window's groups."""
    out = tmp_path / "slide"
    res = runner.invoke(app, ["group", str(images / "scene0.png"), "-m", str(groupvit_dir), "-l", "a,b",
                              "--short-side", "48", "--window", "32", "--stride", "16", "-d", str(out),
                              "-f", "jsonl"])
    assert res.exit_code == 0, res.output
    [line] = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert line["method"] == "groupvit"
    assert line["stages"][1] > 4  # more final groups than one window has: 2 x 3 windows (48 x 64 px, 32 / 16)
    for kind in ("mask", "overlay", "stage1", "stage2"):
        assert Image.open(out / f"scene0.{kind}.png").size == (64, 48)
