"""`clipkit segment` logic on the tiny random model: outputs, background rules, errors, CLI, mIoU arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipkit import dense, lseg
from clipkit.api import segment
from clipkit.artefacts import coco_rle
from clipkit.errors import ModelError, UsageError
from clipkit.evaluation import confusion_miou
from clipkit.methods.segment import SegmentPredictor as Segmenter
from clipkit.results import ErrorRecord, Segmentation


def test_plain_matches_stock_tokens_of_a_loaded_model(tiny_model):
    """The LoadedModel path (CLS-token pooling) reproduces open_clip's own output tokens."""
    visual = tiny_model.model.visual
    x = torch.randn(2, 3, 32, 32)
    visual.output_tokens = True
    try:
        with torch.no_grad():
            _, tokens = visual(x)
    finally:
        visual.output_tokens = False
    with torch.no_grad():
        raw = dense.patch_embeddings(tiny_model, x, "plain", normalize=False)
    torch.testing.assert_close(raw.reshape(2, 16, -1), tokens @ visual.proj, rtol=1e-5, atol=1e-5)


def test_predict_shapes_and_background_rules(tiny_model):
    image = Image.new("RGB", (70, 45), (200, 40, 40))
    seg = Segmenter(tiny_model, ["red circle", "blue square"], background="none")
    label_map, probs = seg.segment_image(image)
    assert label_map.shape == (45, 70) and label_map.dtype == np.uint8
    assert probs.shape == (2, 45, 70)
    assert set(np.unique(label_map)) <= {1, 2}  # no background class, no threshold: every pixel labelled
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    # threshold 1.0: no pixel is that certain, everything becomes background
    label_map, _ = Segmenter(tiny_model, ["red circle", "blue square"], threshold=1.0).segment_image(image)
    assert (label_map == 0).all()
    # background prompts compete as classes: probabilities of the labels no longer sum to one
    seg = Segmenter(tiny_model, ["red circle"], background="sky,floor")
    assert seg.background == ["sky", "floor"]
    _, probs = seg.segment_image(image)
    assert (probs.sum(0) < 1.0).all()


def test_min_cosine_turns_unlike_pixels_into_background(tiny_model):
    """A pixel is background when its best label cosine is below ``min_cosine`` (the cosine, not the softmax)."""
    from clipkit import dense

    image = Image.new("RGB", (40, 32), (200, 40, 40))
    image.paste((40, 40, 200), (20, 0, 40, 32))
    seg = Segmenter(tiny_model, ["red circle", "blue square"], background="none", variant="plain")
    cos = (seg.logits(image) / dense.logit_scale_for(tiny_model, "plain")).amax(0).numpy()
    cut = float(np.median(cos))
    label_map, _ = Segmenter(tiny_model, ["red circle", "blue square"], background="none", variant="plain",
                             min_cosine=cut).segment_image(image)
    np.testing.assert_array_equal(label_map == 0, cos < cut)
    off, _ = Segmenter(tiny_model, ["red circle", "blue square"], background="none", variant="plain",
                       min_cosine=-1).segment_image(image)
    assert (off > 0).all()


def test_default_variant_follows_the_tower(tiny_model):
    """Average-pooled towers (shapes-clip) default to their trained stock tokens, CLS-pooled ones to NACLIP."""
    from clipkit import dense

    seg = Segmenter(tiny_model, ["a"])
    assert seg.variant == dense.default_variant(tiny_model)
    tiny_model.model.visual.pool_type = "avg"
    try:
        assert Segmenter(tiny_model, ["a"]).variant == "plain"
    finally:
        tiny_model.model.visual.pool_type = "tok"
    assert Segmenter(tiny_model, ["a"]).variant == "naclip"


def test_bad_options_are_usage_errors(tiny_model):
    with pytest.raises(UsageError, match=r"--variant must be one of .*'plain', not 'foo'"):
        Segmenter(tiny_model, ["a"], variant="foo")
    with pytest.raises(UsageError, match="--threshold: Input should be less than or equal to 1"):
        Segmenter(tiny_model, ["a"], threshold=1.5)
    with pytest.raises(UsageError, match="--min-cosine: Input should be less than or equal to 1"):
        Segmenter(tiny_model, ["a"], min_cosine=2.0)
    with pytest.raises(UsageError, match="--variant applies only to training-free segmentation"):
        Segmenter(tiny_model, ["a"], head="lseg-shapes", variant="plain")
    with pytest.raises(UsageError, match="at least one label"):
        Segmenter(tiny_model, [])
    with pytest.raises(ModelError, match="no LSeg head 'nope'"):
        Segmenter(tiny_model, ["a"], head="nope")


def test_folder_run_writes_artefacts_and_error_records(tiny_model, image_dir, tmp_path):
    out = tmp_path / "out"
    results = segment(str(image_dir), ["red circle", "blue square"], model=tiny_model, out_dir=out, scores=True,
                      rle=True)
    assert len(results) == 4
    errors = [r for r in results if isinstance(r, ErrorRecord)]
    assert len(errors) == 1 and errors[0].path.endswith("broken.jpg")
    for r in results:
        if isinstance(r, ErrorRecord):
            continue
        assert isinstance(r, Segmentation)
        stem = r.path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        png = Image.open(out / f"{stem}.mask.png")
        assert png.mode == "P" and png.size == (48, 40)  # palette PNG at the original size
        np.testing.assert_array_equal(np.array(png), r.label_map)
        assert (out / f"{stem}.overlay.png").is_file()
        npz = np.load(out / f"{stem}.scores.npz")
        assert npz["scores"].dtype == np.float16 and npz["scores"].shape == (2, 40, 48)
        data = r.to_dict()
        assert data["path"] == r.path and data["files"]["mask"] == str(out / f"{stem}.mask.png")
        assert sum(c["fraction"] for c in data["classes"]) <= 1.0 + 1e-6
        rles = {s["label"]: s["rle"] for s in data["segmentation"]}
        assert set(rles) == {c["label"] for c in data["classes"]}
        json.dumps(data)  # JSON-serialisable


def test_coco_rle_round_trips():
    from pycocotools import mask as mask_utils

    label_map = np.zeros((10, 12), np.uint8)
    label_map[2:5, 3:9] = 2
    (entry,) = coco_rle(label_map, ["a", "b"])
    assert entry["label"] == "b" and entry["category_id"] == 2
    decoded = mask_utils.decode({"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), label_map == 2)


def test_confusion_miou_by_hand():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    out = confusion_miou([pred], [gt], 3, names=["background", "a", "b"])
    # background: tp 3, fp 0, fn 1 -> 3/4 ; a: tp 3, fp 1, fn 1 -> 3/5 ; b: tp 0, fp 1 -> 0
    assert out["per_class"] == {"background": 0.75, "a": 0.6, "b": 0.0}
    assert out["miou"] == pytest.approx((0.75 + 0.6 + 0.0) / 3, abs=1e-4)
    assert out["pixel_accuracy"] == pytest.approx(6 / 8)
    # a class absent from both prediction and truth is left out of the mean; 255 is ignored
    gt2 = np.array([[0, 255]])
    out = confusion_miou([np.array([[0, 2]])], [gt2], 3)
    assert out["per_class"] == {"0": 1.0} and out["miou"] == 1.0


def test_lseg_head_save_load_round_trip(tiny_model, tmp_path):
    torch.manual_seed(0)
    head = lseg.new_head(tiny_model, clip_model="tiny", features=8, dims=[8, 8, 8, 8])
    assert head.cfg.hooks == [0, 0, 1, 1]  # a 2-block tower repeats hooks
    crops = torch.randn(2, 3, 32, 32)
    text = torch.randn(3, 32)
    head.eval()
    with torch.no_grad():
        logits = lseg.lseg_logits_crops(tiny_model, head, crops, text)
    assert logits.shape == (2, 3, 32, 32)
    assert logits.abs().max() <= 1 / 0.07 + 1e-3  # cosine / 0.07
    lseg.save_head(head, tmp_path / "h")
    loaded = lseg.load_head(tmp_path / "h", tiny_model)
    with torch.no_grad():
        again = lseg.lseg_logits_crops(tiny_model, loaded, crops, text)
    torch.testing.assert_close(again, logits, atol=0.15, rtol=0.02)  # fp16 storage
    image = Image.new("RGB", (50, 37), (10, 200, 10))
    seg = Segmenter(tiny_model, ["green", "red"], head=str(tmp_path / "h"))
    label_map, probs = seg.segment_image(image)
    assert label_map.shape == (37, 50) and probs.shape == (2, 37, 50)
    assert seg.background == ["background"]  # the head's trained background label


def test_lseg_head_for_another_model_is_refused(tiny_model, tmp_path):
    cfg = lseg.LSegConfig(width=64, out_dim=32, layers=4, hooks=[0, 1, 2, 3], features=8, dims=[8, 8, 8, 8],
                          clip_model="other-clip")
    lseg.save_head(lseg.LSegHead(cfg), tmp_path / "h")
    with pytest.raises(ModelError, match="trained for other-clip and does not fit"):
        lseg.load_head(tmp_path / "h", tiny_model)


def test_cli_segment_folder(tiny_model_dir, image_dir, tmp_path):
    from clipkit.cli.app import app

    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["segment", str(image_dir), "-m", str(tiny_model_dir), "-l", "red,blue",
                                   "--out-dir", str(out), "--format", "jsonl", "--variant", "sclip"])
    assert res.exit_code == 1, res.output  # one corrupt input -> exit code 1, the others still processed
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert len(lines) == 4 and sum("error" in x for x in lines) == 1
    assert len(list(out.glob("*.overlay.png"))) == 3
    res = CliRunner().invoke(app, ["segment", str(image_dir / "a.png"), "-m", str(tiny_model_dir), "-l", "x",
                                   "--variant", "bogus"])
    assert res.exit_code == 2 and "--variant must be one of" in res.output
