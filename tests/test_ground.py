"""ground: ReCLIP context views, summed scoring, best/all boxes per phrase, JSON record (tiny random model).

Accuracy with shapes-clip is measured by bench/ground_eval.py and the slow test in test_ground_shapes.py.
"""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from clipkit.api import ground
from clipkit.errors import UsageError
from clipkit.methods.ground import GroundConfig, context_views, ground_image, phrase_embeddings, score_boxes
from clipkit.phrases import parse_phrases


def scene() -> Image.Image:
    img = Image.new("RGB", (96, 80), (235, 232, 228))
    d = ImageDraw.Draw(img)
    d.ellipse([8, 10, 39, 41], fill=(215, 35, 35))
    d.rectangle([55, 40, 84, 69], fill=(35, 75, 220))
    return img


CFG = GroundConfig(templates="none")
BOXES = np.array([[8, 10, 40, 42], [55, 40, 85, 70], [5, 5, 90, 75]], np.float32)


@pytest.mark.parametrize("mode", ["blur", "grey"])
def test_context_view_keeps_the_box_and_hides_the_rest(tiny_model, mode):
    from clipkit.regions import image_tensor

    img = scene().resize((64, 64))  # the tiny model's input is 32 x 32: pixel (r, c) covers 2 x 2 of these
    full = image_tensor(tiny_model, img.resize((32, 32), Image.BICUBIC))[0]
    box = np.array([[0, 0, 32, 32]], np.float32)  # the top-left quarter: the red circle's side
    [view] = context_views(tiny_model, img, box, mode, blur_radius=100)
    assert view.shape == (3, 32, 32)
    torch.testing.assert_close(view[:, :16, :16], full[:, :16, :16])  # inside: untouched
    # outside: the blue square (bottom right) is gone — its blue-minus-red contrast collapses
    blue = (full[2] - full[0])[20:28, 24:30].mean()
    assert blue > 1.0 and (view[2] - view[0])[20:28, 24:30].mean() < 0.3 * blue


def test_scores_sum_logits_over_representations():
    reps = [torch.nn.functional.normalize(torch.randn(3, 8), dim=-1) for _ in range(2)]
    text = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    expected = 50.0 * (reps[0] @ text.T + reps[1] @ text.T)
    torch.testing.assert_close(score_boxes(reps, text, 50.0), expected)


def test_best_box_per_phrase_and_record(tiny_model):
    caption, phrases = parse_phrases("a red circle left of a blue square")
    text = phrase_embeddings(tiny_model, phrases, CFG)
    res = ground_image(tiny_model, scene(), caption, phrases, text, CFG, path="s.png", boxes=BOXES)
    det = res.detections
    assert det.class_id.tolist() == [0, 1] and len(det) == 2
    assert all(any(np.allclose(b, c) for c in BOXES) for b in det.xyxy)  # chosen among the candidates
    assert ((det.confidence >= 0) & (det.confidence <= 1)).all()
    assert list(det.data["phrase"]) == ["a red circle", "a blue square"]
    record = res.to_dict()
    assert record["caption"] == caption and record["path"] == "s.png"
    assert [p["span"] for p in record["phrases"]] == [[0, 12], [21, 34]]
    assert set(record["phrases"][0]["boxes"][0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}


def test_all_boxes_respects_threshold(tiny_model):
    caption, phrases = parse_phrases(None, "red circle;blue square")
    text = phrase_embeddings(tiny_model, phrases, CFG)
    for thr in (0.0, 0.99):
        cfg = GroundConfig(templates="none", all_boxes=True, threshold=thr)
        det = ground_image(tiny_model, scene(), caption, phrases, text, cfg, boxes=BOXES).detections
        assert (det.confidence >= thr).all()
    cfg = GroundConfig(templates="none", all_boxes=True, threshold=0.0, nms_iou=1.0)
    everything = ground_image(tiny_model, scene(), caption, phrases, text, cfg, boxes=BOXES).detections
    assert len(everything) == 2 * len(BOXES)


def test_no_proposals_gives_no_boxes(tiny_model):
    caption, phrases = parse_phrases(None, "red circle")
    text = phrase_embeddings(tiny_model, phrases, CFG)
    res = ground_image(tiny_model, scene(), caption, phrases, text, CFG, boxes=np.zeros((0, 4)))
    assert len(res.detections) == 0 and res.to_dict()["phrases"][0]["boxes"] == []


def test_ground_python_api_with_proposals(tiny_model):
    [res] = ground(scene(), caption="a red circle", model=tiny_model, templates="none", threshold=0.0)
    assert len(res.detections) == 1 and res.phrases[0].text == "a red circle"
    [res] = ground(scene(), caption="a red circle", model=tiny_model, templates="none", threshold=1.0)
    assert len(res.detections) == 0 and res.to_dict()["phrases"][0]["boxes"] == []  # absent: no box at all


def test_bad_options_are_usage_errors(tiny_model):
    with pytest.raises(UsageError, match="--context must be one of"):
        GroundConfig.make(context="fog")
    with pytest.raises(UsageError, match="cannot both be 'none'"):
        GroundConfig.make(context="none", region="none")
    with pytest.raises(UsageError, match="give a caption"):
        ground(scene(), model=tiny_model)
