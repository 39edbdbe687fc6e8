"""ground's scoring and decision rules on hand-built inputs (clipkit/methods/ground.py), written from the mutants
that survived the earlier tests (bench/results/mutation.md).

No model runs here: a stand-in text encoder maps each string to a fixed vector, the box representations are
fixed tensors, and every expected number is computed in the test from the documented formulas — the phrase's box
logit is the mean over representations of ``logit_scale · rep · text``, maxed over the phrase's vocabulary
names; competitors are the best such logit among the names the phrase does not cover; presence and box
probabilities are the calibrated softmax / sigmoid of docs/ground.md. Where ground hands the decision to
:func:`clipkit.reclip.resolve` (relations, superlatives), the expected answer is ``resolve``'s with every option
spelled out — these tests check that ground passes the right inputs and options; ``resolve`` itself is checked
by hand in tests/test_reclip_*.py.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import clipkit.methods.ground as gr
import clipkit.prompts
from clipkit.expressions import Vocabulary, parse_expression
from clipkit.methods.ground import GroundConfig, PhraseScores, calibration_for, ground_image, score_phrases
from clipkit.phrases import parse_phrases
from clipkit.reclip import resolve

VOCAB = {"ground_vocabulary": {"attributes": ["red", "blue"], "nouns": ["circle", "square"]}}
NAMES = ["red circle", "blue circle", "red square", "blue square"]
D = 6
_rng = np.random.default_rng(7)
EMB = {s: F.normalize(torch.from_numpy(_rng.normal(size=D)).float(), dim=0)
       for s in ["the circle", "the square", "the red square", "the image", "the frame", "background", "void",
                 *(f"the {n}" for n in NAMES), *NAMES]}
REPS = [F.normalize(torch.from_numpy(_rng.normal(size=(3, D))).float(), dim=-1) for _ in range(2)]
BOXES = np.array([[0, 0, 10, 10], [20, 0, 40, 30], [50, 20, 60, 30]], np.float32)
SCALE = 4.0
CFG = GroundConfig(background=("background", "void"), templates=("a {}.",))


def mean_logit(text: str) -> np.ndarray:
    """``[K]``: the mean over the two representations of ``SCALE · rep · text``, in float64."""
    e = EMB[text].double().numpy()
    return np.mean([SCALE * r.double().numpy() @ e for r in REPS], axis=0)


@pytest.fixture
def encoder(monkeypatch):
    """The stand-in text encoder (records ``(model, labels, templates)`` per call) and fixed box representations
    (records the ``patches`` they were given)."""
    calls, seen = [], {}

    def text_embeddings(model, labels, templates=None, **_):
        calls.append((model, list(labels), templates))
        return torch.stack([EMB[s] for s in labels])  # like the real encoder, an empty list is an error

    def box_embeddings(model, image, boxes, cfg, patches=None):
        seen["patches"] = patches
        return REPS

    monkeypatch.setattr(clipkit.prompts, "text_embeddings", text_embeddings)  # imported at call time
    monkeypatch.setattr(gr, "box_embeddings", box_embeddings)
    return SimpleNamespace(calls=calls, seen=seen)


def text_emb(*phrases: str) -> torch.Tensor:
    """What :func:`phrase_embeddings` gives: the phrases, then the background prompts of ``CFG``."""
    return torch.stack([EMB[s] for s in (*phrases, "background", "void")])


def vocab_model():
    return SimpleNamespace(logit_scale=SCALE, meta=dict(VOCAB))


def test_vocabulary_phrase_logits_competitors_and_background(encoder):
    """'the circle' is scored as the best of "the red circle" / "the blue circle"; each phrase's competitors are
    the vocabulary names it does not cover; background is the best background prompt; the encoder gets this
    model and the configured templates."""
    model = vocab_model()
    caption, phrases = parse_phrases("the circle left of the red square")
    sc = score_phrases(model, Image.new("RGB", (64, 32)), caption, phrases, text_emb("the circle", "the red square"),
                       CFG, boxes=BOXES)
    circle = np.maximum(mean_logit("the red circle"), mean_logit("the blue circle"))
    np.testing.assert_allclose(sc.logits[:, 0], circle, rtol=0, atol=1e-5)
    np.testing.assert_allclose(sc.logits[:, 1], mean_logit("the red square"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(sc.background, np.maximum(mean_logit("background"), mean_logit("void")), atol=1e-5)
    comp0 = np.max([mean_logit(f"the {n}") for n in ("red square", "blue square")], axis=0)
    comp1 = np.max([mean_logit(f"the {n}") for n in ("red circle", "blue circle", "blue square")], axis=0)
    np.testing.assert_allclose(sc.competitors, np.stack([comp0, comp1], 1), rtol=0, atol=1e-5)
    assert sc.expression.relations[0].kind == "left of" and sc.expression.phrases[0].expanded
    assert encoder.calls and all(m is model and t == CFG.templates for m, t in
                                 ((c[0], c[2]) for c in encoder.calls))
    # without the vocabulary option the phrase is scored as written and has no competitors
    plain = score_phrases(model, Image.new("RGB", (64, 32)), caption, phrases,
                          text_emb("the circle", "the red square"), CFG.replace(vocabulary=False), boxes=BOXES)
    np.testing.assert_allclose(plain.logits[:, 0], mean_logit("the circle"), rtol=0, atol=1e-5)
    assert np.isneginf(plain.competitors).all()


def test_without_vocabulary_competitors_are_minus_infinity_and_no_prompts_give_zero_background(encoder):
    model = SimpleNamespace(logit_scale=SCALE)  # no clipkit.json vocabulary
    caption, phrases = parse_phrases(None, "the circle")
    sc = score_phrases(model, Image.new("RGB", (64, 32)), caption, phrases, torch.stack([EMB["the circle"]]),
                       CFG.replace(background=()), boxes=BOXES)
    assert np.isneginf(sc.competitors).all() and sc.competitors.shape == (3, 1)
    np.testing.assert_array_equal(sc.background, np.zeros(3))  # nothing to subtract in "background" mode
    np.testing.assert_allclose(sc.logits[:, 0], mean_logit("the circle"), rtol=0, atol=1e-5)


def test_null_phrase_gets_no_query_and_minus_infinity_logits(encoder):
    """'the image' names the picture, not an object: nothing is encoded for it and its logit is -inf."""
    caption, phrases = parse_phrases(None, "the circle;the image")
    sc = score_phrases(vocab_model(), Image.new("RGB", (64, 32)), caption, phrases,
                       text_emb("the circle", "the image"), CFG, boxes=BOXES)
    assert sc.expression.phrases[1].null
    assert np.isneginf(sc.logits[:, 1]).all() and np.isneginf(sc.competitors[:, 1]).all()
    assert np.isfinite(sc.logits[:, 0]).all()
    assert not any("the red circle" in labels and "the red square" in labels for _, labels, _ in encoder.calls)


def test_only_null_phrases_means_no_proposals_and_empty_arrays(encoder, monkeypatch):
    monkeypatch.setattr(gr, "ground_proposals", lambda *a, **k: pytest.fail("nothing to propose for"))
    monkeypatch.setattr(gr, "dense_patches", lambda *a, **k: "P")
    caption, phrases = parse_phrases(None, "the image")
    sc = score_phrases(vocab_model(), Image.new("RGB", (64, 32)), caption, phrases, text_emb("the image"), CFG)
    assert sc.boxes.shape == (0, 4) and sc.logits.shape == (0, 1) and sc.background.shape == (0,)
    assert sc.competitors.shape == (0, 1)
    out = ground_image(vocab_model(), Image.new("RGB", (64, 32)), caption, phrases, text_emb("the image"), CFG)
    assert len(out.detections) == 0 and out.present == [0.0]  # no candidates: absent, not present


def test_relations_off_keeps_the_caption_parser_notes_and_name(encoder, monkeypatch):
    """With relations off every phrase stands alone, but the record still says which parser ran (here a stand-in
    for spaCy's) and what it did not understand."""
    import dataclasses

    real = gr.parse_expression
    monkeypatch.setattr(gr, "parse_expression", lambda *a, **k: dataclasses.replace(real(*a, **k), parser="spacy"))
    caption, phrases = parse_phrases("the circle left of the square inside the frame")
    cfg = CFG.replace(relations=False)
    emb = text_emb("the circle", "the square", "the frame")
    args = (vocab_model(), Image.new("RGB", (64, 32)), caption, phrases, emb, cfg)
    sc = score_phrases(*args, boxes=BOXES)
    assert sc.expression.caption == caption and sc.expression.relations == []
    out = ground_image(*args, boxes=BOXES)
    assert out.parser == "spacy" and any("not understood" in n for n in out.notes)
    assert out.decided_by == [None, None, None]


@pytest.mark.parametrize("vocabulary_proposals", [True, False])
def test_proposals_get_the_names_to_look_for_and_the_shared_dense_pass(encoder, monkeypatch, vocabulary_proposals):
    """Proposals come from the score maps of every vocabulary name (``vocabulary_proposals``) or of the phrases'
    own queries, each followed by the background prompts; they reuse the image's one dense pass."""
    got, dense = {}, []
    monkeypatch.setattr(gr, "dense_patches", lambda m, image, c: dense.append(m) or "P")

    def proposals(model, image, emb, n_labels, cfg, patches=None):
        got.update(model=model, size=image.size, emb=emb, n=n_labels, cfg=cfg, patches=patches)
        return BOXES

    monkeypatch.setattr(gr, "ground_proposals", proposals)
    model = vocab_model()
    caption, phrases = parse_phrases("the circle left of the red square")
    cfg = CFG.replace(vocabulary_proposals=vocabulary_proposals, region="fast")
    sc = score_phrases(model, Image.new("RGB", (64, 32)), caption, phrases,
                       text_emb("the circle", "the red square"), cfg)
    looked_for = NAMES if vocabulary_proposals else ["the red circle", "the blue circle", "the red square"]
    want = torch.stack([EMB[s] for s in (*looked_for, "background", "void")])
    assert got["model"] is model and got["size"] == (64, 32) and got["cfg"] is cfg
    assert got["n"] == len(looked_for) and torch.equal(got["emb"], want)
    assert got["patches"] == "P" and encoder.seen["patches"] == "P" and dense == [model]
    assert all(m is model and t == cfg.templates for m, _, t in encoder.calls)
    np.testing.assert_array_equal(sc.boxes, BOXES)


@pytest.mark.parametrize("region", ["fast", "both"])
def test_given_boxes_still_share_one_dense_pass_with_the_fast_region(encoder, monkeypatch, region):
    dense = []
    monkeypatch.setattr(gr, "dense_patches", lambda m, image, c: dense.append(c) or "P")
    monkeypatch.setattr(gr, "ground_proposals", lambda *a, **k: pytest.fail("boxes were given"))
    caption, phrases = parse_phrases(None, "the circle")
    cfg = CFG.replace(region=region, regions={"roi_output": 3})
    score_phrases(vocab_model(), Image.new("RGB", (64, 32)), caption, phrases, text_emb("the circle"), cfg,
                  boxes=BOXES)
    assert encoder.seen["patches"] == "P" and dense == [gr.region_config({"roi_output": 3})]


def test_ground_proposals_computes_its_dense_pass_with_the_region_config(monkeypatch):
    """Called without patches, the proposals run the dense pass themselves, with the config's region options."""
    seen = {}
    monkeypatch.setattr(gr, "dense_patches", lambda m, image, c: seen.update(cfg=c) or "P")
    monkeypatch.setattr(gr, "default_variant", lambda m: "naclip")
    monkeypatch.setattr(gr, "score_maps_from_patches", lambda m, patches, *a, **k: seen.update(p=patches) or "maps")
    monkeypatch.setattr(gr, "patch_pixels", lambda *a: 8)
    monkeypatch.setattr(gr, "propose", lambda image, **k: seen.update(k) or np.zeros((0, 4)))
    import clipkit.dense

    monkeypatch.setattr(clipkit.dense, "min_cosine_for", lambda *a: 0.0)
    cfg = GroundConfig(regions={"roi_output": 3})
    gr.ground_proposals(SimpleNamespace(), Image.new("RGB", (32, 32)), torch.eye(2), 1, cfg)
    assert seen["cfg"] == gr.region_config({"roi_output": 3}) and seen["p"] == "P" and seen["score_maps"] == "maps"


# --- calibration_for --------------------------------------------------------------------------------------


def test_uncalibrated_model_gets_unit_temperature_and_the_background_option():
    cal = calibration_for(SimpleNamespace(), GroundConfig())
    assert cal == {"temperature": 1.0, "no_object_logit": 0.0, "mode": "background", "threshold": 0.5}


def test_user_calibration_values_replace_the_model_fits():
    fitted = {"temperature": 2.0, "no_object_logit": 3.0, "mode": "vocabulary", "threshold": 0.6,
              "box_temperature": 1.5, "box_no_object_logit": 2.5, "expanded": {"temperature": 4.0}}
    model = SimpleNamespace(meta={"ground_calibration": fitted})
    assert calibration_for(model, GroundConfig()) == fitted  # nothing given: the model's fit, per phrase kind
    t = calibration_for(model, GroundConfig(temperature=0.5))
    assert t["temperature"] == 0.5 and "expanded" not in t and t["box_temperature"] == 1.5
    m = calibration_for(model, GroundConfig(calibration_mode="constant"))
    assert m["mode"] == "constant" and "expanded" not in m and m["no_object_logit"] == 3.0
    b = calibration_for(model, GroundConfig(no_object_logit=1.0))
    assert (b["no_object_logit"], b["mode"]) == (1.0, "constant")  # a constant logit given by the user
    assert "box_temperature" not in b and "box_no_object_logit" not in b and "expanded" not in b


# --- ground_image's decisions on fixed phrase scores --------------------------------------------------------


def _fixed(monkeypatch, caption, logits, background, competitors=None, vocabulary=None, phrases=None):
    """ground_image on fixed PhraseScores (boxes BOXES); returns ``(caption, phrases, expression)``."""
    caption, phrases = parse_phrases(caption, phrases)
    expr = parse_expression(caption, phrases, vocabulary=vocabulary)
    logits = np.asarray(logits, np.float32).reshape(len(BOXES), len(phrases))
    comp = np.full(logits.shape, -np.inf, np.float32) if competitors is None else np.asarray(competitors, np.float32)
    sc = PhraseScores(BOXES, logits, np.asarray(background, np.float32), expr, comp)
    monkeypatch.setattr(gr, "score_phrases", lambda *a, **k: sc)
    return caption, phrases, expr


def _run(caption, phrases, cfg, model=None):
    return ground_image(model or SimpleNamespace(logit_scale=1.0), Image.new("RGB", (80, 40)), caption, phrases,
                        torch.zeros(len(phrases) + 1, D), cfg)


def _softmax_with_none(x, t, b):
    z = np.append(np.asarray(x, np.float64), b) / t
    e = np.exp(z - z.max())
    return e[:-1] / e.sum(), e[-1] / e.sum()


def test_best_box_presence_uses_the_models_calibration_and_the_background_prompts(monkeypatch):
    """present = 1 − p(no object) of softmax([logit − best background logit, b] / T) with the model's T and b."""
    logits, bg = [3.0, 1.0, 0.5], [0.2, 1.0, -1.0]
    caption, phrases, _ = _fixed(monkeypatch, "the circle", logits, bg)
    model = SimpleNamespace(logit_scale=1.0, meta={"ground_calibration": {"temperature": 2.0, "no_object_logit": 1.5,
                                                                         "mode": "background", "threshold": 0.1}})
    out = _run(caption, phrases, GroundConfig(), model)
    p, none = _softmax_with_none(np.array(logits) - 1.0, 2.0, 1.5)
    assert out.present[0] == pytest.approx(1 - none)
    assert out.detections.confidence[0] == pytest.approx((1 - none) * p[0] / p.sum(), rel=1e-6)


def test_best_box_vocabulary_mode_measures_against_each_boxs_competitors(monkeypatch):
    logits, bg, comp = [3.0, 2.0, 0.5], [0.5, 0.5, 0.5], [[2.9], [0.0], [-np.inf]]
    caption, phrases, _ = _fixed(monkeypatch, "the circle", logits, bg, comp)
    cfg = GroundConfig(calibration_mode="vocabulary", temperature=1.0, no_object_logit=0.0, threshold=0.0)
    out = _run(caption, phrases, cfg)
    margin = np.array([3.0 - 2.9, 2.0 - 0.5, 0.5 - 0.5])  # minus max(competitor, background) per box
    _, none = _softmax_with_none(margin, 1.0, 0.0)
    assert out.present[0] == pytest.approx(1 - none)
    np.testing.assert_array_equal(out.detections.xyxy, BOXES[[1]])  # box 1, not the highest raw logit


def test_presence_exactly_at_the_threshold_is_returned(monkeypatch):
    """'reaches the threshold' is inclusive: one candidate whose logit equals the no-object logit is present with
    probability exactly 1/2, in both modes."""
    caption, phrases, _ = _fixed(monkeypatch, "the circle", [2.0, 2.0, 2.0], [0.0, 0.0, 0.0])
    cfg = GroundConfig(calibration_mode="constant", temperature=1.0, no_object_logit=2.0, threshold=0.5)
    box = _run(caption, phrases, cfg.replace(all_boxes=True, nms_iou=1.0))
    assert len(box.detections) == 3 and np.all(box.detections.confidence == 0.5)
    caption, phrases, _ = _fixed(monkeypatch, "the circle", [2.0, -np.inf, -np.inf], [0.0, 0.0, 0.0])
    best = _run(caption, phrases, cfg)
    assert best.present == [0.5] and len(best.detections) == 1


@pytest.mark.parametrize(("caption", "option", "default"), [
    ("the leftmost circle", {"superlative_rule": "count"}, {"superlative_rule": "reclip"}),
    ("the leftmost circle", {"superlative_rule": "reclip"}, {"superlative_rule": "count"}),
    ("the circle left of the square", {"relation_prior": "presence"}, {"relation_prior": "softmax"}),
    ("the circle next to the square", {"next_to_scale": 0.5}, {"next_to_scale": 0.1}),
])
def test_best_box_is_reclips_execution_with_the_configured_options(monkeypatch, caption, option, default):
    """The best box and its score are those of :func:`clipkit.reclip.resolve` given this call's background,
    competitors, image size and reasoning options; each case is one where the option changes the answer."""
    n = len(parse_phrases(caption)[1])
    logits = np.array([[1.0, -2.0], [2.5, 0.3], [1.2, 2.8]])[:, :n]
    bg, comp = np.array([0.1, 0.4, 0.2]), np.array([[0.3, 1.0], [1.4, -np.inf], [0.2, 0.5]])[:, :n]
    caption, phrases, expr = _fixed(monkeypatch, caption, logits, bg, comp)
    cal = {"temperature": 0.7, "no_object_logit": 0.2, "mode": "vocabulary", "threshold": 0.0}
    cfg = GroundConfig(threshold=0.0, temperature=0.7, no_object_logit=0.2, calibration_mode="vocabulary", **option)

    def expected(**opts):
        kw = {"superlative_rule": cfg.superlative_rule, "prior": cfg.relation_prior,
              "next_to_scale": cfg.next_to_scale, **opts}
        return resolve(expr, BOXES, logits.astype(np.float32), cal, background=bg.astype(np.float32),
                       competitors=comp.astype(np.float32), image_size=(80, 40), **kw)[0]

    want = expected()
    out = _run(caption, phrases, cfg)
    got = out.detections
    np.testing.assert_array_equal(got.xyxy[got.class_id == 0], BOXES[[want["best"]]])
    assert got.confidence[got.class_id == 0][0] == pytest.approx(want["score"], rel=1e-5)
    key = next(iter(default))
    other = expected(**{{"superlative_rule": "superlative_rule", "relation_prior": "prior",
                         "next_to_scale": "next_to_scale"}[key]: default[key]})
    assert abs(other["score"] - want["score"]) > 1e-3  # the option matters in this case
    if "next to" in caption:  # σ is a fraction of the image diagonal, not of the boxes' extent
        no_size = resolve(expr, BOXES, logits, cal, background=bg, competitors=comp,
                          next_to_scale=cfg.next_to_scale)[0]
        assert abs(no_size["score"] - want["score"]) > 1e-3


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_all_boxes_probabilities_per_mode_and_expanded_calibration(monkeypatch):
    """--all: each box's own probability sigmoid((logit − reference − b) / T), the reference being the best
    background logit ("background") or the box's best competitor/background ("vocabulary"); a phrase scored over
    vocabulary names uses its own "expanded" calibration."""
    v = Vocabulary(("red", "blue"), ("circle", "square"))
    logits = np.array([[3.0, 1.0], [2.0, 2.5], [0.5, 0.0]])
    bg, comp = [0.5, 1.0, 0.0], [[2.0, -np.inf], [0.0, 0.2], [-np.inf, 3.0]]
    caption, phrases, expr = _fixed(monkeypatch, None, logits, bg, comp, vocabulary=v,
                                    phrases="the red circle;the square")
    assert not expr.phrases[0].expanded and expr.phrases[1].expanded
    cal = {"temperature": 2.0, "no_object_logit": 0.5, "mode": "background", "threshold": 0.0,
           "expanded": {"temperature": 0.5, "no_object_logit": -0.5, "mode": "vocabulary"}}
    model = SimpleNamespace(logit_scale=1.0, meta={"ground_calibration": cal})
    det = _run(caption, phrases, GroundConfig(all_boxes=True, nms_iou=1.0, threshold=0.0), model).detections
    got = {(int(c), tuple(b)): float(s) for c, b, s in zip(det.class_id, det.xyxy.tolist(), det.confidence,
                                                            strict=True)}
    for k in range(3):
        want0 = _sigmoid((logits[k, 0] - 1.0 - 0.5) / 2.0)  # background mode: minus the image's best bg (1.0)
        ref = max(comp[k][1], bg[k])
        want1 = _sigmoid((logits[k, 1] - ref + 0.5) / 0.5)  # vocabulary mode, the expanded phrase's fit
        assert got[(0, tuple(BOXES[k]))] == pytest.approx(want0, rel=1e-6)
        assert got[(1, tuple(BOXES[k]))] == pytest.approx(want1, rel=1e-6)


def test_all_boxes_never_returns_a_null_phrase(monkeypatch):
    caption, phrases, expr = _fixed(monkeypatch, None, [[5.0, -np.inf], [4.0, -np.inf], [3.0, -np.inf]],
                                    [0.0, 0.0, 0.0], phrases="the circle;the image")
    assert expr.phrases[1].null
    cfg = GroundConfig(all_boxes=True, threshold=0.0, nms_iou=1.0, calibration_mode="constant")
    out = _run(caption, phrases, cfg)
    assert set(out.detections.class_id.tolist()) == {0} and out.present[1] == 0.0
