"""ground_image with relations, superlatives and absence (tiny random model, hand-built candidate boxes): the
record says which relation decided each phrase, the referent comes first, absent phrases get no box."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipkit.methods.ground import GroundConfig, calibration_for, ground_image, phrase_embeddings
from clipkit.phrases import parse_phrases


def scene() -> Image.Image:
    img = Image.new("RGB", (120, 60), (235, 232, 228))
    d = ImageDraw.Draw(img)
    d.ellipse([4, 14, 34, 44], fill=(215, 35, 35))
    d.rectangle([45, 15, 75, 45], fill=(35, 75, 220))
    d.ellipse([86, 14, 116, 44], fill=(215, 35, 35))
    return img


BOXES = np.array([[4, 14, 35, 45], [45, 15, 76, 46], [86, 14, 117, 45]], np.float32)


def run(model, caption, **cfg):
    cfg = GroundConfig(templates="none", **cfg)
    caption, phrases = parse_phrases(caption)
    text = phrase_embeddings(model, phrases, cfg)
    return ground_image(model, scene(), caption, phrases, text, cfg, boxes=BOXES)


def test_record_names_the_deciding_relation_and_the_parser(tiny_model):
    res = run(tiny_model, "the circle left of the square", threshold=0.0)
    record = res.to_dict()
    assert [p["phrase"] for p in record["phrases"]] == ["the circle", "the square"]  # referent first
    assert record["phrases"][0]["decided_by"] == {"relation": "left of", "anchor": "the square"}
    assert record["phrases"][1]["decided_by"] is None
    assert record["parser"] == "rules" and "notes" not in record
    assert all(0.0 <= p["present"] <= 1.0 for p in record["phrases"])
    referent = record["phrases"][0]["boxes"]
    assert len(referent) == 1 and 0.0 <= referent[0]["score"] <= record["phrases"][0]["present"]


@pytest.mark.parametrize(("caption", "expected"), [
    ("the circle left of the square", 0), ("the circle right of the square", 2), ("the circle", 2),
    ("the leftmost circle", 0), ("the second circle from the right", 0), ("the circle on the right", 2),
])
def test_relations_decide_between_two_circles(tiny_model, monkeypatch, caption, expected):
    """Scores fixed by hand (box 2 looks a bit more like "the circle" than box 0; box 1 is the square): the
    relation or superlative, not the score, decides which circle comes back."""
    import torch

    import clipkit.methods.ground as g

    def fixed(reps, text, logit_scale):  # [K boxes, queries + background]: circle, (square), background
        circle = [8.0, -9.0, 8.5]
        cols = [*[circle, [-9.0, 9.0, -9.0]][:text.shape[0] - 1], [-20.0, -20.0, -20.0]]
        return torch.tensor(cols).T * len(reps)

    monkeypatch.setattr(g, "score_boxes", fixed)
    det = run(tiny_model, caption, temperature=1.0, no_object_logit=0.0).detections
    referent = det.xyxy[det.class_id == 0]
    assert len(referent) == 1 and np.allclose(referent[0], BOXES[expected])


def test_superlative_is_recorded_and_unknown_words_are_noted(tiny_model):
    rec = run(tiny_model, "the leftmost circle", threshold=0.0).to_dict()
    assert rec["phrases"][0]["decided_by"] == {"superlative": "leftmost", "ordinal": 1}
    rec = run(tiny_model, "the circle inside the square", threshold=0.0).to_dict()
    assert rec["phrases"][0]["decided_by"] is None and "'inside' not understood" in rec["notes"][0]


@pytest.mark.parametrize("all_boxes", [False, True])
def test_a_phrase_below_the_threshold_gets_an_empty_box_list(tiny_model, all_boxes):
    rec = run(tiny_model, "the circle left of the square", threshold=1.0, all_boxes=all_boxes).to_dict()
    assert [p["boxes"] for p in rec["phrases"]] == [[], []]
    rec = run(tiny_model, "the circle left of the square", threshold=0.0, all_boxes=all_boxes).to_dict()
    assert all(p["boxes"] for p in rec["phrases"])


def test_calibration_comes_from_the_model_unless_overridden(tiny_model):
    assert calibration_for(tiny_model, GroundConfig())["threshold"] == 0.5  # uncalibrated model: defaults

    class Calibrated:
        def __init__(self):
            self.meta = {"ground_calibration": {"temperature": 2.0, "no_object_logit": 3.0, "mode": "constant",
                                                "threshold": 0.6}}

    cal = calibration_for(Calibrated(), GroundConfig())
    assert (cal["temperature"], cal["no_object_logit"], cal["threshold"]) == (2.0, 3.0, 0.6)
    cal = calibration_for(Calibrated(), GroundConfig(threshold=0.2, temperature=1.0))
    assert (cal["temperature"], cal["threshold"]) == (1.0, 0.2)


def test_bad_reasoning_options_are_usage_errors():
    from clipkit.configs import GroundConfig
    from clipkit.errors import UsageError

    make_config = GroundConfig.make

    with pytest.raises(UsageError, match=r"--superlative-rule must be one of .reclip. or .count."):
        make_config(superlative_rule="most")
    with pytest.raises(UsageError, match="--calibration-mode must be one of"):
        make_config(calibration_mode="fancy")
