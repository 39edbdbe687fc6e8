"""The calibration maths of clipkit/reclip.py, checked against independent brute-force computations.

Each expected value is computed here from the definitions in the docstrings (softmax with a no-object option;
per-box sigmoid against the no-object logit; margins per mode), not by calling the function under test.
"""

import math

import numpy as np
import pytest

from clipkit import reclip


def _nll_phrase(samples, t, b):
    total = 0.0
    for logits, target in samples:
        z = [v / t for v in logits] + [b / t]
        m = max(z)
        e = [math.exp(v - m) for v in z]
        p = e[target] / sum(e) if target >= 0 else e[-1] / sum(e)
        total -= math.log(max(p, 1e-12))
    return total / len(samples)


def test_fit_calibration_finds_the_grid_minimum_of_the_phrase_nll():
    samples = [(np.array([2.0, 0.5]), 0), (np.array([1.0, 1.2]), 1), (np.array([0.3, 0.1]), -1),
               (np.array([3.0, -1.0]), 0), (np.array([0.0, 0.4]), -1)]
    temps, biases = [0.5, 1.0, 2.0, 4.0], [-1.0, 0.0, 0.5, 1.0, 2.0]
    got = reclip.fit_calibration(samples, temps, biases)
    grid = {(t, b): _nll_phrase(samples, t, b) for t in temps for b in biases}
    (t_best, b_best), nll = min(grid.items(), key=lambda kv: kv[1])
    assert (got["temperature"], got["no_object_logit"]) == (t_best, b_best)
    assert got["nll"] == pytest.approx(nll, rel=1e-9)
    # the default grids: T from 0.25 in steps of x1.25, no-object over the observed logit range
    default = reclip.fit_calibration(samples)
    assert default["nll"] <= nll + 1e-9 and -1.0 <= default["no_object_logit"] <= 3.0
    with pytest.raises(ValueError):
        reclip.fit_calibration([])


def test_fit_box_calibration_finds_the_grid_minimum_of_the_binary_nll():
    x = np.array([3.0, 2.5, 0.2, -1.0, 1.0, 0.0])
    y = np.array([1, 1, 0, 0, 1, 0])
    temps, biases = [0.5, 1.0, 2.0], [-0.5, 0.5, 1.5]

    def nll(t, b):
        q = [1 / (1 + math.exp(-(v - b) / t)) for v in x]
        return -sum(math.log(qi if yi else 1 - qi) for qi, yi in zip(q, y, strict=True)) / len(x)

    got = reclip.fit_box_calibration(x, y, temps, biases)
    grid = {(t, b): nll(t, b) for t in temps for b in biases}
    (t_best, b_best), best = min(grid.items(), key=lambda kv: kv[1])
    assert (got["temperature"], got["no_object_logit"]) == (t_best, b_best)
    assert got["nll"] == pytest.approx(best, rel=1e-9)
    assert reclip.fit_box_calibration(x, y)["nll"] <= best + 1e-9
    with pytest.raises(ValueError):
        reclip.fit_box_calibration(np.zeros(0), np.zeros(0))


def test_box_calibration_prefers_the_per_box_fit():
    assert reclip.box_calibration({"temperature": 2.0, "no_object_logit": 0.5}) == (2.0, 0.5)
    assert reclip.box_calibration({}) == (1.0, 0.0)
    both = {"temperature": 2.0, "no_object_logit": 0.5, "box_temperature": 3.0, "box_no_object_logit": -1.0}
    assert reclip.box_calibration(both) == (3.0, -1.0)


def test_margins_per_mode():
    logits = np.array([[2.0, 1.0], [0.5, 3.0]])
    bg = np.array([0.2, 1.5])
    np.testing.assert_array_equal(reclip.margins(logits, {"mode": "constant"}, bg), logits)
    np.testing.assert_allclose(reclip.margins(logits, {"mode": "background"}, bg), logits - 1.5)
    np.testing.assert_allclose(reclip.margins(logits, {}, None), logits)  # background mode, no prompts
    comp = np.array([[1.0, -np.inf], [-np.inf, -np.inf]])
    want = logits - np.maximum(comp, bg[:, None])
    np.testing.assert_allclose(reclip.margins(logits, {"mode": "vocabulary"}, bg, comp), want)
    np.testing.assert_allclose(reclip.margins(logits, {"mode": "vocabulary"}, None, comp),
                               logits - np.where(np.isfinite(comp), comp, 0.0))
    with pytest.raises(ValueError):
        reclip.margins(logits, {"mode": "other"})


def test_box_centres_and_presence():
    cx, cy = reclip._centres(np.array([[0, 0, 10, 20], [4, 6, 8, 10]]))
    np.testing.assert_allclose(cx, [5, 6])
    np.testing.assert_allclose(cy, [10, 8])
    np.testing.assert_allclose(reclip.box_presence(np.array([1.0, 3.0]), 2.0, 1.0),
                               [0.5, 1 / (1 + math.exp(-1.0))])
    p, none = reclip.phrase_distribution(np.array([1.0, 0.0]), 1.0, 0.0)
    e = np.exp([1.0, 0.0, 0.0])
    np.testing.assert_allclose([*p, none], e / e.sum())


BOXES = np.array([[0, 0, 10, 10],      # A: centre (5, 5), area 100
                  [20, 5, 40, 35],     # B: centre (30, 20), area 600
                  [8, 30, 12, 34]])    # C: centre (10, 32), area 16


@pytest.mark.parametrize(("kind", "pairs"), [
    ("left of", {(0, 1), (0, 2), (2, 1)}), ("right of", {(1, 0), (2, 0), (1, 2)}),
    ("above", {(0, 1), (0, 2), (1, 2)}), ("below", {(1, 0), (2, 0), (2, 1)}),
    ("bigger than", {(0, 2), (1, 0), (1, 2)}), ("smaller than", {(2, 0), (0, 1), (2, 1)}),
])
def test_relation_matrix_by_centres_and_areas(kind, pairs):
    want = np.zeros((3, 3))
    for i, j in pairs:
        want[i, j] = 1.0
    np.testing.assert_array_equal(reclip.relation_matrix(kind, BOXES), want)


def test_next_to_decays_with_distance_over_the_scaled_diagonal():
    got = reclip.relation_matrix("next to", BOXES, image_size=(30, 40), next_to_scale=0.2)
    sigma = 0.2 * 50.0
    d01 = math.hypot(30 - 5, 20 - 5)
    assert got[0, 1] == pytest.approx(math.exp(-d01 / sigma)) and got[1, 0] == pytest.approx(got[0, 1])
    assert np.all(np.diag(got) == 0)
    extent = reclip.relation_matrix("next to", BOXES, next_to_scale=0.2)  # diagonal of the boxes' extent (40, 35)
    assert extent[0, 1] == pytest.approx(math.exp(-d01 / (0.2 * math.hypot(40, 35))))
    with pytest.raises(ValueError):
        reclip.relation_matrix("inside", BOXES)


def test_ordinal_superlative_is_a_poisson_binomial_over_present_boxes():
    """'the second from the left' with presence q: box i needs exactly one present box to its left."""
    q = np.array([0.9, 0.6, 0.5])  # centres x: A 5, B 30, C 10 → order A, C, B
    # P(exactly one of the boxes left of i is present): A none → 0; C: A only → 0.9; B: A, C → 0.9·0.5 + 0.1·0.5
    raw = np.array([0.9 * 0.0, 0.6 * (0.9 * 0.5 + 0.1 * 0.5), 0.5 * 0.9])
    np.testing.assert_allclose(reclip.ordinal_superlative(q, "leftmost", BOXES, ordinal=2), raw / raw.sum())
    first = np.array([0.9, 0.6 * 0.1 * 0.5, 0.5 * 0.1])  # nobody present to the left
    np.testing.assert_allclose(reclip.ordinal_superlative(q, "leftmost", BOXES), first / first.sum())
    none = reclip.ordinal_superlative(np.zeros(3), "leftmost", BOXES)
    np.testing.assert_allclose(none, np.full(3, 1 / 3))


def _softmax_with_none(x, t=1.0, b=0.0):
    z = np.append(np.asarray(x, np.float64), b) / t
    e = np.exp(z - z.max())
    e /= e.sum()
    return e[:-1], e[-1]


def test_resolve_a_relation_by_hand():
    """'the circle left of the square': the anchor's distribution reweights the subject's (ReCLIP), the score is
    presence × p(best), and the relation that decided it is reported."""
    from clipkit.expressions import parse_expression

    expr = parse_expression("the circle left of the square")
    logits = np.array([[2.0, 0.0], [2.2, 0.1], [0.0, 3.0]])  # boxes A, B, C × (circle, square)
    cal = {"mode": "constant", "temperature": 1.0, "no_object_logit": 0.0}
    out = reclip.resolve(expr, BOXES, logits, cal)
    p_sq, _ = _softmax_with_none(logits[:, 1])
    anchor = p_sq / p_sq.sum()
    p_ci, none_ci = _softmax_with_none(logits[:, 0])
    subject = p_ci / p_ci.sum()
    want = subject * (reclip.relation_matrix("left of", BOXES) @ anchor)
    want /= want.sum()
    np.testing.assert_allclose(out[0]["distribution"], want)
    np.testing.assert_allclose(out[1]["distribution"], anchor)
    best = int(np.argmax(want))
    assert out[0]["best"] == best == 0 and out[0]["changed"]  # B alone had the higher circle logit
    assert out[0]["score"] == pytest.approx((1 - none_ci) * want[best])
    assert out[0]["decided_by"] == {"relation": "left of", "anchor": "the square"}
    assert out[1]["decided_by"] is None and not out[1]["changed"]


def test_resolve_a_superlative_by_hand():
    from clipkit.expressions import parse_expression

    expr = parse_expression("the leftmost circle")
    logits = np.array([[1.0], [2.0], [1.5]])
    cal = {"mode": "constant", "temperature": 2.0, "no_object_logit": 0.5}
    [res] = reclip.resolve(expr, BOXES, logits, cal)
    p, none = _softmax_with_none(logits[:, 0], 2.0, 0.5)
    dist = p / p.sum()
    want = dist * (reclip.relation_matrix("left of", BOXES) @ dist)
    want /= want.sum()
    np.testing.assert_allclose(res["distribution"], want)
    assert res["present"] == pytest.approx(1 - none)
    assert res["decided_by"] == {"superlative": "leftmost", "ordinal": 1}
    counted = reclip.resolve(expr, BOXES, logits, cal, superlative_rule="count")[0]
    q = reclip.box_presence(logits[:, 0], 2.0, 0.5)
    np.testing.assert_allclose(counted["distribution"], reclip.ordinal_superlative(q, "leftmost", BOXES))
    assert reclip.resolve(expr, np.zeros((0, 4)), np.zeros((0, 1)), cal)[0]["best"] is None
