"""Offline noun-phrase chunking with spans; GLIP-style label joining; --phrases resolution."""

import pytest

from clipkit.phrases import glip_join, glip_split, noun_phrases, parse_phrases, rule_chunks


def texts(caption):
    return [p.text for p in rule_chunks(caption)]


@pytest.mark.parametrize(("caption", "expected"), [
    ("a red circle left of a blue square", ["a red circle", "a blue square"]),
    ("A small green triangle next to the big yellow star, and two purple hexagons.",
     ["A small green triangle", "the big yellow star", "two purple hexagons"]),
    ("the leftmost red circle", ["the leftmost red circle"]),
    ("the circle on the left is red", ["the circle"]),
    ("There is a cat and a remote in the picture", ["a cat", "a remote", "the picture"]),
    ("red circle", ["red circle"]),
])
def test_chunks(caption, expected):
    assert texts(caption) == expected


def test_spans_index_the_original_caption():
    caption = "  A Red circle, left of  the BLUE square!"
    for p in rule_chunks(caption):
        assert caption[p.start:p.end] == p.text
    assert [p.span for p in rule_chunks(caption)] == [[2, 14], [25, 40]]


def test_punctuation_breaks_a_chunk():
    assert texts("a star; a cross") == ["a star", "a cross"]


def test_glip_join_matches_glip_prompt_format():
    caption, phrases = glip_join(["red circle", "blue square", "cat"])
    assert caption == "red circle . blue square . cat . "
    assert [caption[p.start:p.end] for p in phrases] == ["red circle", "blue square", "cat"]


def test_glip_prompt_is_split_back_into_its_names():
    phrases = glip_split("red circle . blue square .")
    assert [(p.text, p.span) for p in phrases] == [("red circle", [0, 10]), ("blue square", [13, 24])]
    assert glip_split("a red circle near a square") is None


def test_parse_explicit_phrases_found_in_caption():
    _caption, phrases = parse_phrases("A red circle and a red circle", "red circle;red circle")
    assert [p.span for p in phrases] == [[2, 12], [19, 29]]
    with pytest.raises(ValueError, match="does not occur"):
        parse_phrases("a red circle", "blue square")


def test_parse_phrases_without_caption_joins_them():
    caption, phrases = parse_phrases(None, "red circle; blue square")
    assert caption == "red circle . blue square . "
    assert [p.text for p in phrases] == ["red circle", "blue square"]


def test_parse_needs_some_input():
    with pytest.raises(ValueError, match="give a caption"):
        parse_phrases(None, None)
    with pytest.raises(ValueError, match="no noun phrase"):
        parse_phrases("is on of the", None)


def test_rule_chunker_when_spacy_is_refused():
    assert [p.text for p in noun_phrases("a red circle", use_spacy=False)] == ["a red circle"]


# ------------------------------------------------------------------ referring expressions (clipkit/expressions.py)
from clipkit.expressions import Vocabulary, parse_expression  # noqa: E402

VOCAB = Vocabulary(("red", "green", "blue"), ("circle", "square", "star"))


@pytest.mark.parametrize(("caption", "kind"), [
    ("the circle left of the red square", "left of"),
    ("the circle to the left of the square", "left of"),
    ("the circle on the right of the square", "right of"),
    ("the star above the square", "above"),
    ("the star on top of the square", "above"),
    ("the star below the square", "below"),
    ("the star underneath the square", "below"),
    ("the star next to the square", "next to"),
    ("the star nearest to the square", "next to"),
    ("the star beside the square", "next to"),
    ("the star that is bigger than the square", "bigger than"),
    ("the star smaller than the square", "smaller than"),
])
def test_each_relation_links_the_referent_to_its_anchor(caption, kind):
    e = parse_expression(caption)
    assert [(r.kind, r.subject, r.anchor) for r in e.relations] == [(kind, 0, 1)]
    assert [p.text for p in e.phrases] == [caption[: caption.index(" ", 4)], caption[caption.rindex("the "):]]
    assert not e.superlatives and not e.notes and e.parser == "rules"


@pytest.mark.parametrize(("caption", "kind", "ordinal"), [
    ("the leftmost circle", "leftmost", 1),
    ("the rightmost circle", "rightmost", 1),
    ("the topmost circle", "topmost", 1),
    ("the bottommost circle", "bottommost", 1),
    ("the biggest circle", "biggest", 1),
    ("the smallest circle", "smallest", 1),
    ("the left circle", "leftmost", 1),
    ("the circle on the left", "leftmost", 1),
    ("the circle at the bottom", "bottommost", 1),
    ("the circle on the right side of the image", "rightmost", 1),
    ("the second circle from the left", "leftmost", 2),
    ("the third biggest circle", "biggest", 3),
    ("the second from the top", "topmost", 2),
])
def test_each_superlative_and_ordinal(caption, kind, ordinal):
    e = parse_expression(caption, vocabulary=VOCAB)
    [s] = e.superlatives
    assert (s.kind, s.target, s.ordinal) == (kind, 0, ordinal)
    assert caption[s.start:s.end] == s.text and not e.relations
    assert "leftmost" not in e.phrases[0].query and "second" not in e.phrases[0].query


def test_expression_spans_index_the_caption():
    caption = "The CIRCLE, to the left of  the red square"
    e = parse_expression(caption)
    assert [(p.text, p.span) for p in e.phrases] == [("The CIRCLE", [0, 10]), ("the red square", [28, 42])]
    [r] = e.relations
    assert caption[r.start:r.end] == r.text == "left" and r.kind == "left of"


@pytest.mark.parametrize("caption", ["a red circle, and a blue square", "a red circle, a blue square",
                                     "a red circle and a blue square", "red circle . blue square ."])
def test_a_list_is_not_a_relation(caption):
    e = parse_expression(caption)
    assert not e.relations and not e.notes and len(e.phrases) == 2


def test_relations_chain_and_the_referent_stays_first():
    e = parse_expression("the circle left of the square above the star")
    assert [(r.kind, r.subject, r.anchor) for r in e.relations] == [("left of", 0, 1), ("above", 1, 2)]


@pytest.mark.parametrize(("caption", "attributes", "noun", "queries"), [
    ("the circle", (), "circle", ["the red circle", "the green circle", "the blue circle"]),
    ("the red one", ("red",), None, ["the red circle", "the red square", "the red star"]),
    ("the red shape", ("red",), None, ["the red circle", "the red square", "the red star"]),
    ("the blue star", ("blue",), "star", ["the blue star"]),
])
def test_noun_phrases_naming_a_shape_a_colour_or_both(caption, attributes, noun, queries):
    [p] = parse_expression(caption, vocabulary=VOCAB).phrases
    assert (p.attributes, p.noun, p.queries(VOCAB)) == (attributes, noun, queries)
    assert p.queries(None) == [caption]  # no vocabulary (a web-scale CLIP): the phrase as written


def test_unknown_relation_words_fall_back_with_a_note():
    e = parse_expression("the circle inside the square")
    assert not e.relations and [p.text for p in e.phrases] == ["the circle", "the square"]
    assert e.notes and "'inside' not understood" in e.notes[0]
    e = parse_expression("the second circle")
    assert not e.superlatives and "without a direction" in e.notes[0]
    e = parse_expression("zorbly quix flumphs the")  # gibberish never raises
    assert isinstance(e.notes, list)


def test_parse_phrases_drops_picture_parts_but_keeps_objects():
    _caption, phrases = parse_phrases("the circle on the right side of the image")
    assert [p.text for p in phrases] == ["the circle"]
