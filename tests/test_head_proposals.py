"""Proposals from a trained segmentation head (clipkit.head_proposals) join ground's candidates as ReCLIP's
external proposals: only the objects the phrases' own boxes touch, never deciding presence."""

from __future__ import annotations

import numpy as np
import pytest

from clipkit import head_proposals as hp


class _Model:
    def __init__(self, meta):
        self.meta = meta


def test_the_head_is_the_models_unless_asked():
    model = _Model({"ground_proposal_head": "lseg-shapes"})
    assert hp.proposal_head(model, None) == "lseg-shapes"
    assert hp.proposal_head(model, "none") is None
    assert hp.proposal_head(model, "other-head") == "other-head"
    assert hp.proposal_head(_Model({}), None) is None


def test_snap_keeps_own_boxes_first_and_picks_the_head_outline(monkeypatch):
    own = np.array([[10, 10, 40, 30],      # short box of object A (head outline covers it)
                    [100, 100, 120, 120]],  # object B: no head box
                   np.float32)
    head = np.array([[8, 8, 50, 50],        # A's outline: IoU with own[0] = 0.34 >= 0.2 (joins)
                     [200, 200, 230, 230],  # an object no own box touches: stays out
                     [10, 10, 40, 31]],     # A again, near-copy of own[0]: joins, covers own[0]
                    np.float32)
    monkeypatch.setattr(hp, "head_boxes", lambda *a, **k: (head, np.zeros(len(head), np.int64)))
    got = hp.snap_to_head(None, None, "h", ["red circle"], own)
    boxes, is_own, pick = got.boxes, got.own, got.pick
    assert got.seen == {"red circle"}  # every name the head segmented, joined or not
    assert boxes.tolist() == [*own.tolist(), head[0].tolist(), head[2].tolist()]
    assert is_own.tolist() == [True, True, False, False]
    assert pick.tolist() == [False, True, True, True]  # own[0] is covered by head[2] (IoU > 0.5)


def test_no_own_boxes_no_head_boxes(monkeypatch):
    found = (np.array([[0, 0, 10, 10]], np.float32), np.zeros(1, np.int64))
    monkeypatch.setattr(hp, "head_boxes", lambda *a, **k: found)
    got = hp.snap_to_head(None, None, "h", ["red circle"], np.zeros((0, 4), np.float32))
    boxes, is_own, pick = got.boxes, got.own, got.pick
    assert boxes.shape == (0, 4) and not is_own.any() and not pick.any()


@pytest.mark.skipif("shapes-clip" not in __import__("clipkit.registry").registry.bundled_models(),
                    reason="shapes-clip not bundled")
def test_presence_comes_from_the_own_boxes_and_the_box_from_the_picks():
    """On a scene, the head's outlines leave the own boxes' presence as it was; with the head's segmentation as
    evidence (the default), a phrase none of whose names it segments is absent; a present phrase keeps its box.
    (Which box wins is the bench's: on held-out scenes the outlines raise accuracy, bench/results/ground.md.)"""
    from clipkit.methods import Sample
    from clipkit.methods.ground import GroundPredictor
    from clipkit.registry import load_model
    from clipkit.world.scenes import SceneConfig, generate_scene

    model = load_model("shapes-clip", device="cpu")
    scene = generate_scene(6161, 0, SceneConfig(size=(224, 224)))  # a blue circle, hexagon and triangle
    caption = "the blue hexagon . the yellow star"
    sample = Sample("s", image=scene.image)
    own_presence = GroundPredictor(model, caption, head_presence=False).predict([sample])[0]
    without = GroundPredictor(model, caption, proposal_head="none").predict([sample])[0]
    assert own_presence.present == pytest.approx(without.present, abs=1e-6)
    default = GroundPredictor(model, caption).predict([sample])[0]  # + the head's segmentation as evidence
    assert default.present[0] == pytest.approx(without.present[0], abs=1e-6)  # the head segments a blue hexagon
    assert default.present[1] == 0.0  # and no yellow star anywhere: absent
    for answer in (own_presence, default):
        assert [answer.detections.labels[c] for c in answer.detections.class_id] == ["the blue hexagon"]


def _scores(seen=None, pick=True):
    from clipkit.expressions import parse_expression
    from clipkit.methods.ground import PhraseScores
    from clipkit.phrases import parse_phrases

    caption, phrases = parse_phrases("the red circle . the blue star")
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 12, 12], [40, 0, 50, 10]], np.float32)
    logits = np.array([[9.0, 1.0], [2.0, 0.5], [8.0, 0.2], [1.0, 3.0]], np.float32)  # box 0: own only, box 2: head
    own = np.array([True, True, False, False])
    return PhraseScores(boxes, logits, np.zeros(4, np.float32), parse_expression(caption, phrases), None,
                        own if pick else None, np.array([False, True, True, True]) if pick else None, seen)


def test_resolve_takes_the_box_from_the_picks_and_presence_from_the_own_boxes():
    from clipkit.configs import GroundConfig
    from clipkit.methods.ground import _resolve
    from clipkit.reclip import resolve

    cal = {"temperature": 1.0, "no_object_logit": 5.0, "mode": "constant", "threshold": 0.5}
    sc = _scores()
    got = _resolve(sc, cal, GroundConfig(), (64, 64))

    def oracle(sel):
        idx = np.flatnonzero(sel)
        return idx, resolve(sc.expression, sc.boxes[idx], sc.logits[idx], cal, background=sc.background[idx],
                            image_size=(64, 64))

    pick_idx, by_pick = oracle(sc.pick)
    _, by_own = oracle(sc.own)
    for j in range(2):
        assert got[j]["best"] == int(pick_idx[by_pick[j]["best"]])  # an index into all the candidates
        assert got[j]["present"] == pytest.approx(by_own[j]["present"])
        assert got[j]["score"] == pytest.approx(by_own[j]["present"] * by_pick[j]["score"] / by_pick[j]["present"])
    assert got[0]["best"] == 2  # the head's outline, not the own box 0 it covers
    alone = _resolve(_scores(pick=False), cal, GroundConfig(), (64, 64))
    everything = resolve(sc.expression, sc.boxes, sc.logits, cal, background=sc.background, image_size=(64, 64))
    assert [r["best"] for r in alone] == [r["best"] for r in everything] == [0, 3]


def test_a_phrase_the_head_never_segments_is_absent_unless_asked_not_to():
    from clipkit.configs import GroundConfig
    from clipkit.methods.ground import _resolve

    cal = {"temperature": 1.0, "no_object_logit": 0.0, "mode": "constant", "threshold": 0.5}
    seen = _resolve(_scores(seen=[True, False]), cal, GroundConfig(), (64, 64))
    assert seen[0]["present"] > 0.5 and seen[1]["present"] == 0.0 and seen[1]["score"] == 0.0
    kept = _resolve(_scores(seen=[True, False]), cal, GroundConfig(head_presence=False), (64, 64))
    unseen = _resolve(_scores(seen=None), cal, GroundConfig(), (64, 64))
    assert kept[1]["present"] == pytest.approx(unseen[1]["present"]) and kept[1]["present"] > 0
    assert [r["best"] for r in seen] == [r["best"] for r in kept]


@pytest.mark.skipif("shapes-clip" not in __import__("clipkit.registry").registry.bundled_models(),
                    reason="shapes-clip not bundled")
def test_boxes_given_by_the_caller_are_the_candidates_as_they_are():
    from clipkit.configs import GroundConfig
    from clipkit.methods.ground import phrase_embeddings, score_phrases
    from clipkit.phrases import parse_phrases
    from clipkit.registry import load_model
    from clipkit.world.scenes import SceneConfig, generate_scene

    model = load_model("shapes-clip", device="cpu")
    scene = generate_scene(6161, 0, SceneConfig(size=(224, 224)))
    caption, phrases = parse_phrases("the blue hexagon")
    cfg = GroundConfig()
    given = np.array([[8, 121, 82, 205], [73, 44, 141, 112]], np.float32)
    sc = score_phrases(model, scene.image, caption, phrases, phrase_embeddings(model, phrases, cfg), cfg, boxes=given)
    assert sc.own is None and sc.pick is None and np.array_equal(sc.boxes, given)
    found = score_phrases(model, scene.image, caption, phrases, phrase_embeddings(model, phrases, cfg), cfg)
    assert found.own is not None and found.own.sum() < len(found.boxes)  # its own proposals, then the outlines
