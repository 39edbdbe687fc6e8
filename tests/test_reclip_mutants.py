"""ReCLIP's executor and calibration fits (clipkit/reclip.py) on tiny hand-built cases, written from the mutants
that survived the earlier tests (bench/results/mutation.md): the documented default grids of the fits, the
numerically extreme cases (huge logits, probabilities that round to 0 or 1, no candidate at all), the
fallbacks when no box satisfies a rule, and every option of :func:`resolve` (calibration defaults, competitors,
expanded phrases, null phrases, the presence prior, "next to" scale and image size, count rule with a relation).

Expected values come from the formulas in the docstrings, computed here in plain Python/numpy; where a case is
built from a lower-level function of the module (``box_presence``, ``relation_matrix``, ``relate``,
``ordinal_superlative``) that function is checked by hand in tests/test_reclip_calibration.py and
tests/test_ground_reclip.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipkit import reclip
from clipkit.expressions import Vocabulary, parse_expression

# three boxes in a row (XYXY px), centres x 5, 35, 65 and y 5, 15, 25
BOXES = np.array([[0, 0, 10, 10], [20, 0, 50, 30], [60, 20, 70, 30]], np.float64)
T_GRID = [0.25 * 1.25 ** i for i in range(19)]  # the documented default temperatures, 0.25 … 13.9


def _softmax_with_none(x, t=1.0, b=0.0):
    z = [v / t for v in x] + [b / t]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return np.array(e[:-1]) / s, e[-1] / s


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


# --- relation matrices -------------------------------------------------------------------------------------


def test_areas_are_exact_below_one_pixel_and_zero_for_inverted_boxes():
    thin = np.array([[0, 0, 0.5, 10], [5, 0, 5.8, 10]])  # areas 5 and 8
    np.testing.assert_array_equal(reclip.relation_matrix("bigger than", thin), [[0, 0], [1, 0]])
    flat = np.array([[0, 0, 10, 0.5], [5, 0, 15, 0.8]])
    np.testing.assert_array_equal(reclip.relation_matrix("smaller than", flat), [[0, 1], [0, 0]])
    # an inverted box (x2 < x1 or y2 < y1) has area 0, like an empty one: neither is bigger
    degenerate = np.array([[10, 0, 5, 10], [0, 0, 0, 10], [0, 10, 10, 5]])
    np.testing.assert_array_equal(reclip.relation_matrix("bigger than", degenerate), np.zeros((3, 3)))


def test_next_to_default_scale_and_extent():
    """Default σ = 0.1 × the diagonal of the boxes' extent (x from the smallest x1 to the largest x2)."""
    boxes = np.array([[30, 0, 40, 10], [5, 20, 15, 50]])  # extent 35 x 50; centres (35, 5), (10, 35)
    d = math.hypot(25, 30)
    got = reclip.relation_matrix("next to", boxes)
    assert got[0, 1] == pytest.approx(math.exp(-d / (0.1 * math.hypot(35, 50))))
    assert reclip.relation_matrix("next to", np.zeros((0, 4))).shape == (0, 0)


def test_next_to_scale_below_one_pixel_is_honoured():
    boxes = np.array([[0, 0, 2, 2], [1, 0, 3, 2]])  # centres 1 px apart
    got = reclip.relation_matrix("next to", boxes, image_size=(30, 40), next_to_scale=0.01)  # σ = 0.5 px
    assert got[0, 1] == pytest.approx(math.exp(-1 / 0.5))


# --- superlatives ------------------------------------------------------------------------------------------


def test_superlative_keeps_the_distribution_when_no_box_qualifies():
    p = np.array([1.0, 0.0, 0.0])  # all mass on the leftmost box: nothing it is right of
    np.testing.assert_array_equal(reclip.superlative(p, "rightmost", BOXES), p)


def test_ordinal_superlative_clips_q_to_probabilities():
    q = np.array([1.4, -0.3, 0.5])
    np.testing.assert_allclose(reclip.ordinal_superlative(q, "leftmost", BOXES, 2),
                               reclip.ordinal_superlative(np.array([1.0, 0.0, 0.5]), "leftmost", BOXES, 2))
    # box 2 is second from the left only when box 1 (q clipped to 0) is absent and box 0 present: 1 · 1 · 0.5
    np.testing.assert_allclose(reclip.ordinal_superlative(q, "leftmost", BOXES, 2), [0, 0, 1])
    # the leftmost: box 0 (surely present, nothing before it); box 2 never, box 0 being surely before it
    np.testing.assert_allclose(reclip.ordinal_superlative(q, "leftmost", BOXES), [1, 0, 0])


def test_ordinal_beyond_the_present_boxes_falls_back_to_presence():
    """'the third from the left' when at most two boxes can be present: no box qualifies, so the answer is the
    normalised presence q (or uniform when nothing is present)."""
    q = np.array([0.5, 0.3, 0.0])
    np.testing.assert_allclose(reclip.ordinal_superlative(q, "leftmost", BOXES, 3), [0.625, 0.375, 0.0])
    np.testing.assert_allclose(reclip.ordinal_superlative(np.array([1.0, 1.0, 0.0]), "leftmost", BOXES, 3),
                               [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(reclip.ordinal_superlative(np.zeros(1), "leftmost", BOXES[:1]), [1.0])


# --- calibrated probabilities ------------------------------------------------------------------------------


def test_phrase_distribution_is_stable_for_large_logits():
    """CLIP logits reach logit_scale (100) and T may be 0.25: z = 400 must not overflow."""
    p, none = reclip.phrase_distribution(np.array([100.0, 99.75]), 0.25, 0.0)
    e = 1 / (1 + math.exp(-1.0))
    np.testing.assert_allclose([*p, none], [e, 1 - e, 0.0], atol=1e-12)


def _phrase_nll(samples, t, b):
    total = 0.0
    for logits, target in samples:
        p, none = _softmax_with_none(logits, t, b)
        total -= math.log(max(none if target < 0 else p[target], 1e-12))
    return total / len(samples)


@pytest.mark.parametrize("samples", [
    [([4.0, 1.0, 0.5], 0), ([2.0, 2.5], 1), ([0.3, 0.1], -1), ([3.0, -1.0, 2.0], 2), ([1.0, 0.4], -1)],
    [([1.0, 0.0], 1)],  # the lower logit is right: the flattest softmax, the grid's largest T, fits best
])
def test_fit_calibration_default_grids(samples):
    """Defaults: T = 0.25 · 1.25^i (i < 19), no-object logit = 61 evenly spaced values over the observed range."""
    every = [v for lg, _ in samples for v in lg]
    biases = list(np.linspace(min(every), max(every), 61))
    grid = {(t, b): _phrase_nll(samples, t, b) for t in T_GRID for b in biases}
    (t_best, b_best), nll = min(grid.items(), key=lambda kv: kv[1])
    got = reclip.fit_calibration([(np.array(lg), t) for lg, t in samples])
    assert got["temperature"] == pytest.approx(t_best, rel=1e-12)
    assert got["no_object_logit"] == pytest.approx(b_best, rel=1e-12)
    assert got["nll"] == pytest.approx(nll, rel=1e-9)


def test_fit_calibration_with_no_candidates_anywhere():
    """Every phrase had no candidate box (target: no object): any calibration explains that perfectly."""
    got = reclip.fit_calibration([(np.zeros(0), -1), (np.zeros(0), -1)])
    assert got["nll"] == 0.0 and got["no_object_logit"] == 0.0 and got["temperature"] in T_GRID


@pytest.mark.parametrize(("x", "y"), [
    ([3.0, 2.5, 0.2, -1.0, 1.0, 0.0, 1.8], [1, 1, 0, 0, 1, 0, 0]),
    ([1.0, 0.0], [0, 1]),  # inverted: the largest T fits best
])
def test_fit_box_calibration_default_grids(x, y):
    """Defaults: T as fit_calibration, no-object logit = 81 evenly spaced values over the observed range."""
    biases = list(np.linspace(min(x), max(x), 81))

    def nll(t, b):
        q = [_sigmoid((v - b) / t) for v in x]
        return -sum(math.log(qi if yi else 1 - qi) for qi, yi in zip(q, y, strict=True)) / len(x)

    grid = {(t, b): nll(t, b) for t in T_GRID for b in biases}
    (t_best, b_best), best = min(grid.items(), key=lambda kv: kv[1])
    got = reclip.fit_box_calibration(np.array(x), np.array(y))
    assert got["temperature"] == pytest.approx(t_best, rel=1e-12)
    assert got["no_object_logit"] == pytest.approx(b_best, rel=1e-12, abs=1e-12)
    assert got["nll"] == pytest.approx(best, rel=1e-9)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # exp(800) = inf: p = 0
@pytest.mark.parametrize(("x", "b"), [([0.0, 10.0], 0.0), ([0.0, 200.0], 200.0)])
def test_fit_box_calibration_floors_saturated_probabilities(x, b):
    """A probability that rounds to 1 (the negative at 10 above b, T = 0.25) or to 0 (the positive 200 below b)
    costs log(1e-12), not an infinite NLL."""
    got = reclip.fit_box_calibration(np.array(x), np.array([1, 0]), [0.25], [b])
    assert got["nll"] == pytest.approx(-(math.log(1e-12) + math.log(0.5)) / 2, rel=1e-5)


# --- margins -----------------------------------------------------------------------------------------------


def test_vocabulary_margin_without_competitors_is_against_the_background():
    logits, bg = np.array([[2.0], [1.0]]), np.array([0.5, 1.5])
    np.testing.assert_allclose(reclip.margins(logits, {"mode": "vocabulary"}, bg), [[1.5], [-0.5]])


def test_phrase_calibration_of_a_plain_phrase_is_the_top_level():
    from clipkit.phrases import Phrase

    cal = {"temperature": 1.0, "expanded": {"temperature": 3.0}}
    assert reclip.phrase_calibration(cal, Phrase("a circle", 0, 8)) is cal


# --- resolve -----------------------------------------------------------------------------------------------


def test_resolve_calibration_defaults_to_unit_temperature_and_zero_no_object():
    logits = np.array([[1.0], [2.0], [0.5]])
    [res] = reclip.resolve(parse_expression("the circle"), BOXES, logits, {"mode": "constant"})
    p, none = _softmax_with_none([1.0, 2.0, 0.5])
    assert res["present"] == pytest.approx(1 - none)
    np.testing.assert_allclose(res["distribution"], p / p.sum())


def test_resolve_vocabulary_mode_uses_competitors_or_else_the_background():
    logits = np.array([[3.0], [2.0], [0.5]])
    bg, comp = np.array([0.5, 0.5, 0.5]), np.array([[2.9], [0.0], [-np.inf]])
    cal = {"mode": "vocabulary", "temperature": 1.0, "no_object_logit": 0.0}
    expr = parse_expression("the circle")
    [res] = reclip.resolve(expr, BOXES, logits, cal, background=bg, competitors=comp)
    _, none = _softmax_with_none([3.0 - 2.9, 2.0 - 0.5, 0.5 - 0.5])
    assert res["present"] == pytest.approx(1 - none) and res["best"] == 1
    [alone] = reclip.resolve(expr, BOXES, logits, cal, background=bg)  # no competitors: against the background
    _, none = _softmax_with_none([2.5, 1.5, 0.0])
    assert alone["present"] == pytest.approx(1 - none) and alone["best"] == 0


def test_resolve_uses_the_expanded_phrases_own_calibration():
    v = Vocabulary(("red", "blue"), ("circle", "square"))
    expr = parse_expression("the circle", vocabulary=v)
    assert expr.phrases[0].expanded
    cal = {"mode": "constant", "temperature": 1.0, "no_object_logit": 0.0,
           "expanded": {"mode": "constant", "temperature": 2.0, "no_object_logit": 1.0}}
    logits = np.array([[1.0], [2.0], [0.5]])
    [res] = reclip.resolve(expr, BOXES, logits, cal)
    _, none = _softmax_with_none([1.0, 2.0, 0.5], 2.0, 1.0)
    assert res["present"] == pytest.approx(1 - none)


def test_resolve_null_phrase_entry_and_the_phrases_before_it():
    """'the image' is not grounded (an empty entry), and the phrase before it is still resolved."""
    from clipkit.phrases import parse_phrases

    caption, phrases = parse_phrases(None, "the circle;the image")
    expr = parse_expression(caption, phrases)
    logits = np.array([[1.0, 5.0], [2.0, 5.0], [0.5, 5.0]])
    circle, image = reclip.resolve(expr, BOXES, logits, {"mode": "constant"})
    assert circle["best"] == 1 and circle["present"] > 0
    assert image["best"] is None and image["score"] == 0.0 and image["present"] == 0.0
    assert image["decided_by"] is None and image["changed"] is False
    np.testing.assert_array_equal(image["distribution"], np.zeros(3))
    [empty] = reclip.resolve(parse_expression("the circle"), np.zeros((0, 4)), np.zeros((0, 1)), {})
    assert empty["score"] == 0.0 and empty["distribution"].shape == (0,) and empty["changed"] is False
    assert empty["decided_by"] is None


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # exp(800) = inf: p = 0
def test_resolve_far_below_the_no_object_option_is_uniform_over_the_boxes():
    """Every box probability underflows to 0: the distribution over boxes is uniform, presence 0; a relation and
    the presence prior keep that fallback."""
    logits = np.array([[-1000.0], [-1000.0], [-1000.0]])
    [res] = reclip.resolve(parse_expression("the circle"), BOXES, logits, {"mode": "constant"})
    np.testing.assert_allclose(res["distribution"], np.full(3, 1 / 3))
    assert res["present"] == 0.0 and res["score"] == 0.0
    both = np.array([[-1000.0, -1.0], [-1000.0, 3.0], [-1000.0, -1.0]])
    sub, _ = reclip.resolve(parse_expression("the circle left of the square"), BOXES, both, {"mode": "constant"},
                            prior="presence")
    assert sub["best"] == 0 and np.isfinite(sub["distribution"]).all()


def test_resolve_presence_prior():
    """prior="presence": the subject's weights are its boxes' own probabilities sigmoid((x − b) / T) (per-box fit
    when given), normalised, then reweighted by the relation."""
    expr = parse_expression("the circle left of the square")
    logits = np.array([[4.0, -2.0], [9.0, 0.5], [1.0, 3.0]])
    cal = {"mode": "constant", "temperature": 1.0, "no_object_logit": 0.0, "box_temperature": 2.0,
           "box_no_object_logit": 3.0}
    sub, sq = reclip.resolve(expr, BOXES, logits, cal, prior="presence")
    q = np.array([_sigmoid((v - 3.0) / 2.0) for v in logits[:, 0]])
    want = q / q.sum() * (reclip.relation_matrix("left of", BOXES) @ sq["distribution"])
    np.testing.assert_allclose(sub["distribution"], want / want.sum())
    soft, _ = reclip.resolve(expr, BOXES, logits, cal)
    assert abs(soft["distribution"] - sub["distribution"]).max() > 0.05  # the prior matters here


def test_resolve_next_to_uses_the_image_diagonal_and_scale():
    expr = parse_expression("the circle next to the square")
    logits = np.array([[2.0, -1.0], [0.0, 0.0], [2.0, 1.0]])
    cal = {"mode": "constant"}
    for kw, sigma in (({"image_size": (300, 400)}, 0.1 * 500), ({"image_size": (300, 400), "next_to_scale": 0.02},
                                                                   0.02 * 500)):
        sub, sq = reclip.resolve(expr, BOXES, logits, cal, **kw)
        cx, cy = (BOXES[:, 0] + BOXES[:, 2]) / 2, (BOXES[:, 1] + BOXES[:, 3]) / 2
        d = np.hypot(cx[:, None] - cx[None], cy[:, None] - cy[None])
        m = np.exp(-d / sigma)
        np.fill_diagonal(m, 0)
        p, _ = _softmax_with_none(logits[:, 0])
        want = p / p.sum() * (m @ sq["distribution"])
        np.testing.assert_allclose(sub["distribution"], want / want.sum(), rtol=1e-9)


def test_resolve_count_rule_after_a_relation_weights_presence_by_the_relation():
    """'the leftmost circle above the square' with the count rule: q = presence × p_relation / max p_relation,
    then the ordinal rule on q."""
    expr = parse_expression("the leftmost circle above the square")
    logits = np.array([[2.0, -1.0], [1.0, 1.0], [1.5, 2.0]])
    cal = {"mode": "constant", "temperature": 1.0, "no_object_logit": 0.5}
    sub, sq = reclip.resolve(expr, BOXES, logits, cal, superlative_rule="count")
    p, _ = _softmax_with_none(logits[:, 0], 1.0, 0.5)
    rel = reclip.relate(p / p.sum(), sq["distribution"], reclip.relation_matrix("above", BOXES))
    q = np.array([_sigmoid(v - 0.5) for v in logits[:, 0]]) * rel / rel.max()
    np.testing.assert_allclose(sub["distribution"], reclip.ordinal_superlative(q, "leftmost", BOXES))
    assert sub["decided_by"] == {"relation": "above", "anchor": "the square", "superlative": "leftmost",
                                 "ordinal": 1}


def test_float32_scores_and_boxes_are_computed_in_float64():
    """ground hands float32 boxes and logits in: areas, margins and box probabilities are still float64 — a large
    box 4097² px is bigger than 4096 × 4098 px (equal in float32), and a logit 20 above the no-object option is
    not yet certain (sigmoid(20) rounds to 1 in float32)."""
    boxes = np.array([[0, 0, 4097, 4097], [0, 0, 4096, 4098]], np.float32)
    np.testing.assert_array_equal(reclip.relation_matrix("bigger than", boxes), [[0, 1], [0, 0]])
    x, bg = np.float32(3.0000002), np.float32(0.1)
    got = reclip.margins(np.array([[x]]), {"mode": "background"}, np.array([bg]))
    assert got.dtype == np.float64 and got[0, 0] == np.float64(x) - np.float64(bg)
    q = reclip.box_presence(np.array([20.0], np.float32), 1.0, 0.0)
    assert 1 - q[0] == pytest.approx(1 / (1 + math.exp(20.0)), rel=1e-6)


@pytest.mark.parametrize("fit", ["phrase", "box"])
def test_fit_without_a_finite_likelihood_leaves_the_uncalibrated_values(fit):
    """NaN logits give no finite NLL anywhere on the grid: the result is T = 1, no-object logit 0, nll = inf (the
    values an uncalibrated model uses)."""
    if fit == "phrase":
        got = reclip.fit_calibration([(np.array([np.nan, 1.0]), 0)], [0.5, 2.0], [0.0, 1.0])
    else:
        got = reclip.fit_box_calibration(np.array([np.nan, 1.0]), np.array([1, 0]), [0.5, 2.0], [0.0, 1.0])
    assert got == {"temperature": 1.0, "no_object_logit": 0.0, "nll": float("inf")}
