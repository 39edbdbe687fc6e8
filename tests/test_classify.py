"""clipkit classify: parity with open_clip, the CLI's formats, error records, exit codes and resume."""

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import clipkit
from clipkit.cli.app import app
from clipkit.methods.classify import label_probabilities
from clipkit.results import Classification, ErrorRecord

runner = CliRunner()
LABELS = "red thing,blue thing,green thing"


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_scores_equal_a_direct_open_clip_computation(tiny_model, image_dir):
    labels = LABELS.split(",")
    templates = ["a photo of a {}.", "a {} in a picture."]
    got = clipkit.classify(str(image_dir / "a.png"), labels, model=tiny_model, templates=templates)[0]
    model, tokenizer = tiny_model.model, tiny_model.tokenizer
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, labels, templates, device="cpu")
        pixels = tiny_model.preprocess(Image.open(image_dir / "a.png").convert("RGB")).unsqueeze(0)
        features = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        expected = (model.logit_scale.exp() * features @ classifier).softmax(dim=-1)[0]
    by_label = dict(zip(got.labels, got.scores, strict=True))
    assert np.allclose([by_label[lb] for lb in labels], expected.numpy(), atol=1e-5)


def test_siglip_models_score_with_sigmoid_and_bias():
    class FakeSiglip:
        is_siglip, logit_scale, logit_bias = True, 10.0, -5.0

    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=-1)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = label_probabilities(FakeSiglip(), image, text)
    assert torch.allclose(probs, torch.sigmoid(torch.tensor([[5.0, -5.0]])))


def test_folder_run_streams_jsonl_with_an_error_record_and_exit_1(tiny_model_dir, image_dir):
    result = run("classify", image_dir, "--labels", LABELS, "-m", tiny_model_dir)
    assert result.exit_code == 1
    records = lines(result.stdout)
    assert [r["path"].split("imgs/")[1] for r in records] == ["a.png", "b.jpg", "broken.jpg", "sub/c.png"]
    assert records[2] == {"path": str(image_dir / "broken.jpg"), "error": "cannot decode image: Truncated File Read"}
    scores = [item["score"] for item in records[0]["labels"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3
    assert {item["label"] for item in records[0]["labels"]} == set(LABELS.split(","))


def test_all_good_inputs_exit_0_with_top_k(tiny_model_dir, image_dir):
    result = run("classify", image_dir / "a.png", image_dir / "b.jpg", "-l", LABELS, "-m", tiny_model_dir,
                 "--top-k", "1", "--templates", "none")
    assert result.exit_code == 0, result.output
    assert [len(r["labels"]) for r in lines(result.stdout)] == [1, 1]


def test_multi_label_threshold_keeps_labels_above_it(tiny_model_dir, image_dir):
    result = run("classify", image_dir / "a.png", "-l", LABELS, "-m", tiny_model_dir, "--multi-label",
                 "--threshold", "0.3")
    kept = lines(result.stdout)[0]["labels"]
    assert all(item["score"] >= 0.3 for item in kept)
    full = lines(run("classify", image_dir / "a.png", "-l", LABELS, "-m", tiny_model_dir).stdout)[0]["labels"]
    assert len(kept) == sum(item["score"] >= 0.3 for item in full)


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_other_formats(tiny_model_dir, image_dir, fmt):
    result = run("classify", image_dir / "a.png", "-l", LABELS, "-m", tiny_model_dir, "--format", fmt)
    assert result.exit_code == 0
    if fmt == "json":
        assert json.loads(result.stdout)[0]["path"].endswith("a.png")
    elif fmt == "csv":
        header, *rows = result.stdout.strip().splitlines()
        assert header.startswith("path,rank,label,score") and len(rows) == 3
    else:
        assert "a.png" in result.stdout and "thing" in result.stdout


def test_output_file_and_resume_skip_finished_inputs(tiny_model_dir, image_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    first = run("classify", image_dir, "-l", LABELS, "-m", tiny_model_dir, "-o", out)
    assert first.exit_code == 1 and first.stdout == ""
    done = lines(out.read_text())
    assert len(done) == 4 and not (tmp_path / "scores.jsonl.partial").exists()
    # Simulate an interrupted run: one finished line and a torn one in the partial file.
    partial = tmp_path / "scores.jsonl.partial"
    partial.write_text(json.dumps(done[0]) + "\n" + '{"path": "torn')
    out.unlink()
    again = run("classify", image_dir, "-l", LABELS, "-m", tiny_model_dir, "-o", out, "--resume")
    records = lines(out.read_text())
    assert sorted(r["path"] for r in records) == sorted(r["path"] for r in done)
    assert records[0] == done[0] and again.exit_code == 1


def test_stdin_paths_and_files_from(tiny_model_dir, image_dir, tmp_path):
    piped = run("classify", "-", "-l", LABELS, "-m", tiny_model_dir, input=f"{image_dir / 'a.png'}\n")
    assert [r["path"] for r in lines(piped.stdout)] == [str(image_dir / "a.png")]
    listing = tmp_path / "files.txt"
    listing.write_text(f"{image_dir / 'b.jpg'}\n")
    listed = run("classify", "--files-from", listing, "-l", LABELS, "-m", tiny_model_dir)
    assert [r["path"] for r in lines(listed.stdout)] == [str(image_dir / "b.jpg")]


def test_template_file_and_labels_file(tiny_model_dir, image_dir, tmp_path):
    (tmp_path / "t.txt").write_text("a photo of a {label}\n")
    (tmp_path / "l.txt").write_text("cat\ndog\n")
    result = run("classify", image_dir / "a.png", "--labels-file", tmp_path / "l.txt", "-t", tmp_path / "t.txt",
                 "-m", tiny_model_dir)
    assert result.exit_code == 0 and {i["label"] for i in lines(result.stdout)[0]["labels"]} == {"cat", "dog"}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [(["-l", "a,a"], 2, "Error: duplicate label 'a': each label must appear once"),
     (["-l", ""], 2, "Error: empty label in --labels: remove the stray comma or blank entry"),
     ([], 2, "Error: no labels given: use --labels a,b,c or --labels-file FILE"),
     (["-l", "a,b", "-t", "nope"], 2, "Error: unknown template set 'nope'"),
     (["-l", "a,b", "--format", "xml"], 2, "Error: unknown format 'xml'"),
     (["-l", "a,b", "--device", "cuda:7"], 2, "Error: device 'cuda:7' requested but CUDA is not available"),
     (["-l", "a,b", "-m", "ViT-Q-99"], 2, "Error: unknown model 'ViT-Q-99'")],
)
def test_bad_usage_gives_one_error_line_and_exit_code(tiny_model_dir, image_dir, args, code, message):
    extra = [] if "-m" in args else ["-m", str(tiny_model_dir)]
    result = run("classify", image_dir / "a.png", *args, *extra)
    assert result.exit_code == code
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_python_api_accepts_pil_images_and_arrays(tiny_model):
    red = Image.new("RGB", (40, 40), (255, 0, 0))
    results = clipkit.classify([red, np.zeros((8, 8, 3), np.uint8)], "a,b", model=tiny_model)
    assert [type(r) for r in results] == [Classification, Classification]
    assert clipkit.classify(["missing.png"], "a,b", model=tiny_model) == [
        ErrorRecord("missing.png", "no such file")]


def test_cli_json_equals_open_clip_to_1e5(tiny_model, tiny_model_dir, image_dir):
    """The CLI prints full-precision float32 scores: its JSON equals a direct open_clip computation to 1e-5."""
    labels = LABELS.split(",")
    res = run("classify", image_dir / "a.png", "-m", tiny_model_dir, "-l", LABELS, "-t", "a photo of a {}.",
              "-f", "json")
    [record] = json.loads(res.stdout)
    model, tokenizer = tiny_model.model, tiny_model.tokenizer
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tokenizer, labels, ["a photo of a {}."],
                                                          device="cpu")
        pixels = tiny_model.preprocess(Image.open(image_dir / "a.png").convert("RGB")).unsqueeze(0)
        features = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        expected = (model.logit_scale.exp() * features @ classifier).softmax(dim=-1)[0].numpy()
    by_label = {x["label"]: x["score"] for x in record["labels"]}
    assert np.abs(np.array([by_label[lb] for lb in labels]) - expected).max() <= 1e-5


def test_small_towers_run_in_batches_of_8_unless_asked(tiny_model, tmp_path, monkeypatch):
    """A decode-bound (small) image tower gets batches of 8 by default; --batch-size still wins."""
    from clipkit.methods.classify import ClassifyPredictor

    for i in range(20):
        Image.new("RGB", (16, 16), (i, 0, 0)).save(tmp_path / f"{i:02d}.png")
    seen: list[int] = []
    original = ClassifyPredictor.predict
    monkeypatch.setattr(ClassifyPredictor, "predict", lambda self, s: seen.append(len(s)) or original(self, s))
    clipkit.classify(str(tmp_path), LABELS.split(","), model=tiny_model, workers=0)
    assert seen == [8, 8, 4]
    seen.clear()
    clipkit.classify(str(tmp_path), LABELS.split(","), model=tiny_model, workers=0, batch_size=32)
    assert seen == [20]
