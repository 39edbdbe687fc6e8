"""ReCLIP's relation and superlative rules, the calibrated no-object option and the expression executor, on
hand-built boxes and scores (clipkit/reclip.py)."""

import numpy as np
import pytest

from clipkit.expressions import Vocabulary, parse_expression
from clipkit.reclip import (
    box_presence,
    fit_box_calibration,
    fit_calibration,
    ordinal_superlative,
    phrase_distribution,
    relate,
    relation_matrix,
    resolve,
    superlative,
)

# three boxes in a row (XYXY px): small left, big middle, small right and lower
BOXES = np.array([[0, 0, 10, 10], [20, 0, 50, 30], [60, 20, 70, 30]], np.float32)


@pytest.mark.parametrize(("kind", "expected"), [
    ("left of", [[0, 1, 1], [0, 0, 1], [0, 0, 0]]),
    ("right of", [[0, 0, 0], [1, 0, 0], [1, 1, 0]]),
    ("above", [[0, 1, 1], [0, 0, 1], [0, 0, 0]]),  # centres y: 5, 15, 25
    ("below", [[0, 0, 0], [1, 0, 0], [1, 1, 0]]),
    ("bigger than", [[0, 0, 0], [1, 0, 1], [0, 0, 0]]),  # areas 100, 900, 100: ties are not bigger
    ("smaller than", [[0, 1, 0], [0, 0, 0], [0, 1, 0]]),
])
def test_relation_matrices_follow_reclip_centre_and_area_rules(kind, expected):
    np.testing.assert_array_equal(relation_matrix(kind, BOXES), np.array(expected, float))


def test_next_to_prefers_the_nearest_box_and_never_itself():
    m = relation_matrix("next to", BOXES, image_size=(100, 100))
    assert np.all(np.diag(m) == 0)
    assert m[1, 0] > m[2, 0] and m[2, 1] > m[0, 2]  # box 1 is nearer box 0 than box 2 is
    with pytest.raises(ValueError, match="unknown relation"):
        relation_matrix("inside", BOXES)


def test_relate_picks_the_subject_that_satisfies_the_relation():
    p_circle = np.array([0.5, 0.0, 0.5])  # two equally likely circles: boxes 0 and 2
    p_square = np.array([0.0, 1.0, 0.0])  # the anchor is box 1
    np.testing.assert_allclose(relate(p_circle, p_square, relation_matrix("left of", BOXES)), [1, 0, 0])
    np.testing.assert_allclose(relate(p_circle, p_square, relation_matrix("right of", BOXES)), [0, 0, 1])
    # no box satisfies it: the subject's distribution is kept, not a division by zero
    np.testing.assert_allclose(relate(p_circle, np.array([1.0, 0, 0]), relation_matrix("left of", BOXES)),
                               p_circle)


def test_reclip_superlative_formula():
    p = np.array([0.4, 0.2, 0.4])
    out = superlative(p, "leftmost", BOXES)  # p_i * sum_j p_j [i left of j]
    expected = p * np.array([0.2 + 0.4, 0.4, 0.0])
    np.testing.assert_allclose(out, expected / expected.sum())
    assert np.argmax(superlative(p, "rightmost", BOXES)) == 2
    assert np.argmax(superlative(np.array([0.3, 0.3, 0.4]), "biggest", BOXES)) == 1


def test_ordinal_superlative_counts_the_present_boxes_before_each():
    q = np.array([1.0, 1.0, 1.0])
    for k, expected in ((1, 0), (2, 1), (3, 2)):
        assert np.argmax(ordinal_superlative(q, "leftmost", BOXES, k)) == expected
    # a box that is surely absent does not count: the second from the left among boxes 0 and 2 is box 2
    assert np.argmax(ordinal_superlative(np.array([1.0, 0.0, 1.0]), "leftmost", BOXES, 2)) == 2
    assert np.argmax(ordinal_superlative(q, "bottommost", BOXES, 1)) == 2


def test_phrase_distribution_has_a_no_object_option():
    p_box, p_none = phrase_distribution(np.array([10.0, 2.0]), temperature=1.0, no_object=5.0)
    assert p_box.sum() + p_none == pytest.approx(1.0) and p_box[0] > 0.99 * (1 - p_none)
    _, p_none = phrase_distribution(np.array([1.0, 2.0]), temperature=1.0, no_object=8.0)
    assert p_none > 0.99  # every box scores far below the no-object logit: the phrase is absent
    _, p_none = phrase_distribution(np.zeros(0), 1.0, 0.0)
    assert p_none == 1.0  # no candidates at all
    hot, _ = phrase_distribution(np.array([2.0, 1.0]), 4.0, -50.0)
    assert 0.5 < hot[0] < 0.6  # a high temperature flattens: no saturation at 1.00
    np.testing.assert_allclose(box_presence(np.array([3.0, 5.0]), 2.0, 3.0), [0.5, 1 / (1 + np.exp(-1))])


def test_fit_calibration_recovers_a_separating_no_object_logit():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(60):  # present: the target scores ~10, the others ~2; absent: every box ~2
        logits = rng.normal(2, 0.5, 3)
        logits[0] = rng.normal(10, 0.5)
        samples.append((logits, 0))
        samples.append((rng.normal(2, 0.5, 2), -1))
    fit = fit_calibration(samples)
    assert 3.0 < fit["no_object_logit"] < 9.5 and fit["nll"] < 0.1
    for logits, target in samples[:10]:
        _p_box, p_none = phrase_distribution(logits, fit["temperature"], fit["no_object_logit"])
        assert (p_none > 0.5) == (target < 0)
    box_fit = fit_box_calibration(np.r_[rng.normal(10, 0.5, 50), rng.normal(2, 0.5, 50)], np.r_[[1] * 50, [0] * 50])
    assert 3.0 < box_fit["no_object_logit"] < 9.5


CAL = {"temperature": 1.0, "no_object_logit": 0.0, "mode": "constant"}


def test_resolve_circle_left_of_the_square():
    e = parse_expression("the circle left of the square")
    logits = np.array([[8.0, -9.0], [-9.0, 8.0], [8.5, -9.0]])  # [K boxes, 2 phrases]: circles 0 and 2, square 1
    plain = resolve(parse_expression("the circle"), BOXES, logits[:, :1], CAL)
    assert plain[0]["best"] == 2 and plain[0]["decided_by"] is None  # alone: the higher-scoring circle
    res = resolve(e, BOXES, logits, CAL)
    assert res[0]["best"] == 0 and res[1]["best"] == 1
    assert res[0]["decided_by"] == {"relation": "left of", "anchor": "the square"} and res[0]["changed"]
    assert 0.0 < res[0]["score"] <= res[0]["present"] <= 1.0


def test_resolve_superlative_and_absence():
    logits = np.array([[6.0], [-9.0], [6.5]])
    [res] = resolve(parse_expression("the leftmost circle"), BOXES, logits, CAL)
    assert res["best"] == 0 and res["decided_by"] == {"superlative": "leftmost", "ordinal": 1}
    [res] = resolve(parse_expression("the circle on the right"), BOXES, logits, CAL, superlative_rule="count")
    assert res["best"] == 2
    [res] = resolve(parse_expression("the star"), BOXES, np.array([[-5.0], [-6.0], [-4.0]]), CAL)
    assert res["present"] < 0.05  # below the no-object option: ground returns no box for it
    [res] = resolve(parse_expression("the star"), np.zeros((0, 4)), np.zeros((0, 1)), CAL)
    assert res["best"] is None and res["present"] == 0.0


def test_resolve_background_mode_offsets_the_no_object_logit_per_image():
    cal = {"temperature": 1.0, "no_object_logit": 2.0, "mode": "background"}
    logits = np.array([[5.0], [-9.0], [-9.0]])
    [low_bg] = resolve(parse_expression("the circle"), BOXES, logits, cal, background=np.array([0.0, 0, 0]))
    [high_bg] = resolve(parse_expression("the circle"), BOXES, logits, cal, background=np.array([6.0, 0, 0]))
    assert low_bg["present"] > 0.9 > 0.1 > high_bg["present"]


def test_vocabulary_from_model_meta():
    v = Vocabulary.from_meta({"ground_vocabulary": {"attributes": ["red"], "nouns": ["circle", "star"]}})
    assert v is not None and parse_expression("the red one", vocabulary=v).phrases[0].queries(v) == [
        "the red circle", "the red star"]
    assert Vocabulary.from_meta({}) is None


def test_margins_per_mode():
    from clipkit.reclip import margins

    logits = np.array([[5.0], [3.0]])
    bg = np.array([1.0, 2.0])
    comp = np.array([[4.5], [-np.inf]])
    np.testing.assert_allclose(margins(logits, {"mode": "constant"}, bg, comp), logits)
    np.testing.assert_allclose(margins(logits, {"mode": "background"}, bg, comp), logits - 2.0)
    # per box: minus the best of the competing names and the background prompt
    np.testing.assert_allclose(margins(logits, {"mode": "vocabulary"}, bg, comp), [[0.5], [1.0]])
    with pytest.raises(ValueError, match="unknown calibration mode"):
        margins(logits, {"mode": "odd"})


def test_competitors_are_the_names_a_phrase_does_not_cover():
    v = Vocabulary(("red", "blue"), ("circle", "star"))
    [p] = parse_expression("the red circle", vocabulary=v).phrases
    assert p.competitors(v) == ["the blue circle", "the red star", "the blue star"]
    [p] = parse_expression("the circle", vocabulary=v).phrases
    assert p.competitors(v) == ["the red star", "the blue star"] and p.competitors(None) == []


def test_expanded_phrases_can_have_their_own_calibration():
    from clipkit.reclip import phrase_calibration

    v = Vocabulary(("red", "blue"), ("circle", "star"))
    full, expanded = parse_expression("the red circle left of the star", vocabulary=v).phrases
    assert not full.expanded and expanded.expanded
    cal = {"temperature": 1.0, "mode": "constant", "expanded": {"temperature": 2.0, "mode": "vocabulary"}}
    assert phrase_calibration(cal, full) is cal and phrase_calibration(cal, expanded)["temperature"] == 2.0
    assert phrase_calibration({"temperature": 1.0}, expanded) == {"temperature": 1.0}
