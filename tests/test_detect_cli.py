"""CLI of detect, ground and their evaluations (tiny random model: mechanics, files, errors)."""

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from clipkit.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def scene_file(tmp_path):
    img = Image.new("RGB", (96, 80), (235, 232, 228))
    d = ImageDraw.Draw(img)
    d.ellipse([8, 10, 39, 41], fill=(215, 35, 35))
    d.rectangle([55, 40, 84, 69], fill=(35, 75, 220))
    path = tmp_path / "scene.png"
    img.save(path)
    return path


def test_detect_writes_jsonl_png_and_coco(tiny_model_dir, scene_file, tmp_path):
    out = tmp_path / "out"
    res = invoke("detect", scene_file, "-m", tiny_model_dir, "-l", "red circle,blue square", "-t", "none",
                 "--threshold", "0", "--background", "", "--format", "jsonl", "--out-dir", out,
                 "--coco", tmp_path / "dets.json", "-q")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout.splitlines()[0])
    assert record["path"] == str(scene_file) and record["detections"]
    png = Image.open(out / "scene.boxes.png")
    assert png.size == (96, 80)
    coco = json.loads((tmp_path / "dets.json").read_text())
    assert len(coco) == len(record["detections"])
    assert {c["category_id"] for c in coco} <= {1, 2} and all(len(c["bbox"]) == 4 for c in coco)


def test_detect_coco_categories_map_labels_to_ids(tiny_model_dir, scene_file, tmp_path):
    inst = {"images": [{"id": 7, "file_name": "scene.png"}],
            "categories": [{"id": 11, "name": "red circle"}, {"id": 12, "name": "blue square"}]}
    (tmp_path / "instances.json").write_text(json.dumps(inst))
    res = invoke("detect", scene_file, "-m", tiny_model_dir, "-l", "red circle,blue square", "-t", "none",
                 "--threshold", "0", "--background", "", "--coco", tmp_path / "dets.json",
                 "--coco-categories", tmp_path / "instances.json", "-q", "-f", "jsonl")
    assert res.exit_code == 0, res.output
    coco = json.loads((tmp_path / "dets.json").read_text())
    assert coco and {c["image_id"] for c in coco} == {7} and {c["category_id"] for c in coco} <= {11, 12}
    bad = invoke("detect", scene_file, "-m", tiny_model_dir, "-l", "green star", "--coco", tmp_path / "d.json",
                 "--coco-categories", tmp_path / "instances.json", "-q")
    assert bad.exit_code == 2 and "not categories of" in bad.output


def test_detect_bad_path_option_is_a_usage_error(tiny_model_dir, scene_file):
    res = invoke("detect", scene_file, "-m", tiny_model_dir, "-l", "red circle", "--path", "slow", "-q")
    assert res.exit_code == 2 and "--path must be one of 'image', 'fast' or 'ensemble', not 'slow'" in res.output


def test_ground_cli_record_and_png(tiny_model_dir, scene_file, tmp_path):
    res = invoke("ground", scene_file, "-m", tiny_model_dir, "--caption", "a red circle left of a blue square",
                 "-t", "none", "--out-dir", tmp_path / "g", "-f", "jsonl", "-q")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout.splitlines()[0])
    assert [p["phrase"] for p in record["phrases"]] == ["a red circle", "a blue square"]
    assert [p["span"] for p in record["phrases"]] == [[0, 12], [21, 34]]
    assert all(len(p["boxes"]) == 1 for p in record["phrases"])
    assert (tmp_path / "g" / "scene.boxes.png").is_file()


def test_ground_cli_needs_a_caption_or_phrases(tiny_model_dir, scene_file):
    res = invoke("ground", scene_file, "-m", tiny_model_dir, "-q")
    assert res.exit_code == 2 and "give a caption" in res.output


def test_eval_detect_and_ground_report_their_keys(tiny_model_dir, tmp_path):
    from clipkit.world.export import export

    data = export(tmp_path / "data", n=2, seed=3, size=96, max_objects=2)
    res = invoke("eval", "detect", data, "-m", tiny_model_dir, "--path", "fast", "-q")
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert {"ap", "ap50", "ap75", "ms_per_image"} <= set(scores) and 0.0 <= scores["ap50"] <= 1.0
    res = invoke("eval", "ground", data, "-m", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    scores = json.loads(res.stdout)
    assert {"accuracy", "accuracy_distractor", "ms_per_phrase"} <= set(scores)
    assert scores["expressions"] >= 2


def test_eval_on_a_folder_that_is_not_an_export(tiny_model_dir, tmp_path):
    res = invoke("eval", "detect", tmp_path, "-m", tiny_model_dir, "-q")
    assert res.exit_code == 2 and "not a shapes-world export" in res.output


@pytest.mark.parametrize("command", ["detect", "ground"])
def test_help_does_not_import_torch(command):
    code = (f"import sys\nsys.argv = ['clipkit', '{command}', '--help']\n"
            "from clipkit.cli.app import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "NO-TORCH"


@pytest.mark.parametrize("command", ["detect", "ground", "segment"])
def test_dense_options_pass_through_and_bad_shifts_are_usage_errors(tiny_model_dir, scene_file, command):
    text = ["--caption", "a red circle"] if command == "ground" else ["-l", "red circle,blue square"]
    res = invoke(command, scene_file, "-m", tiny_model_dir, *text, "-t", "none", "--shifts", "2",
                 "--min-cosine", "-1", "-f", "jsonl", "-q",
                 *(["--selective-search"] if command != "segment" else []))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.splitlines()[0])["path"] == str(scene_file)
    res = invoke(command, scene_file, "-m", tiny_model_dir, *text, "--shifts", "3", "-q")
    assert res.exit_code == 2 and "--shifts must be a positive divisor of the patch size 8x8, got 3" in res.output
