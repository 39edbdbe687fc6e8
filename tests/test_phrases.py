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
