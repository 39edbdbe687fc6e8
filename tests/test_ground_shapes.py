"""ground with the bundled shapes-clip on a small fresh set of repeat scenes: relations, superlatives and absence.

A floor, not the target: the figures come from bench/ground_eval.py on 200 held-out scenes
(bench/results/ground.md). Skipped when the bundled model is absent.
"""

import pytest

from clipkit.registry import bundled_models

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("shapes-clip" not in bundled_models(), reason="bundled shapes-clip not present"),
]

FRESH_SEED = 626262  # a stream no trainer, calibration, bench or other test uses


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    from clipkit.evaluation.grounding import evaluate_grounding
    from clipkit.registry import load_model
    from clipkit.world.export import export

    model = load_model("shapes-clip", device="cpu", offline=True)
    data = export(tmp_path_factory.mktemp("fresh") / "data", n=10, seed=FRESH_SEED, size=224, repeat_prob=0.5)
    return evaluate_grounding(data, model)


def test_relations_and_superlatives_pick_the_referred_object(scores):
    """Relation + superlative expressions together (each alone is too few here for a floor)."""
    per = scores["per_type"]
    n = per["relation"]["expressions"] + per["superlative"]["expressions"]
    right = per["relation"]["accuracy"] * per["relation"]["expressions"] + \
        per["superlative"]["accuracy"] * per["superlative"]["expressions"]
    assert n >= 8 and right / n >= 0.7, per


def test_absent_expressions_get_no_box_and_present_ones_do(scores):
    per = scores["per_type"]
    assert per["absent"]["accuracy"] >= 0.8, per
    assert per["plain"]["accuracy"] >= 0.75 and per["attribute"]["accuracy"] >= 0.7, per
    assert scores["parser"] == "rules"
