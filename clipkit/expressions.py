"""Referring expressions with structure: head noun phrases, spatial relations and superlatives, with spans.

ReCLIP (Subramanian et al., ACL 2022; allenai/reclip ``entity_extraction.py``, ``heuristics.py``) walks a spaCy
dependency parse from the head noun: a chain of words ending in another noun chunk is a *relation* to that
chunk, decided by keyword lists (``left/west`` → left of, ``right/east`` → right of, ``above/north/top/back/
behind`` → above, ``below/south/under/front`` → below, ``bigger/larger/closer`` → bigger than, ``smaller/
tinier/further`` → smaller than); a chain of modifiers with no noun chunk at its end is a *superlative*
(``left/leftmost``, ``right/rightmost``, ``top``, ``below/underneath/front``, ``biggest/largest``,
``smallest/tiniest``). Here the same decisions are made without a dependency parse, offline:

* noun phrases come from :func:`clipkit.phrases.noun_phrases` (rule chunker, or spaCy noun chunks when an
  English model is importable — :attr:`Expression.parser` says which ran);
* the words *between* two consecutive noun phrases, with filler words removed ("to the", "that is", "of",
  "than" …), name the relation of the first to the second (``"the circle to the left of the square"``);
  relations chain ("A left of B above C": A←B, B←C); a list separator ("and", ",") means no relation;
* superlative words inside a noun phrase ("the leftmost circle", "the biggest red one", "the left square")
  or a direction after it with nothing to relate to ("the circle on the left", "the second circle from the
  left") make a superlative of that phrase; an ordinal ("second", "3rd") ranks it.

Additions to ReCLIP's keyword lists (deviations, named in docs/ground.md): "next to / beside / near / nearest /
closest / adjacent" → ``next to`` (ReCLIP has no such rule and reads it as a possessive); "over / beneath /
underneath / higher / lower / upper" → above/below; ordinals. Words of the gap that are no relation keyword
never fail: the phrases are then grounded alone and :attr:`Expression.notes` says which words were not
understood.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from clipkit.phrases import Phrase, noun_phrases, parser_name

__all__ = ["RELATIONS", "SUPERLATIVES", "Expression", "NounPhrase", "Relation", "Superlative", "Vocabulary",
           "parse_expression"]

RELATIONS = ("left of", "right of", "above", "below", "next to", "bigger than", "smaller than")
SUPERLATIVES = ("leftmost", "rightmost", "topmost", "bottommost", "biggest", "smallest")

_REL_WORDS: dict[str, str] = {}
for _kind, _ws in {"left of": "left west", "right of": "right east",
                   "above": "above north top back behind over atop higher upper",
                   "below": "below south under front beneath underneath lower bottom",
                   "next to": "next beside besides near nearest closest close adjacent by",
                   "bigger than": "bigger larger greater", "smaller than": "smaller tinier"}.items():
    for _w in _ws.split():
        _REL_WORDS[_w] = _kind
_SUP_WORDS: dict[str, str] = {}
for _kind, _ws in {"leftmost": "leftmost left western", "rightmost": "rightmost right eastern",
                   "topmost": "topmost top uppermost highest upper", "bottommost": "bottommost bottom lowest lower",
                   "biggest": "biggest largest bigger larger", "smallest": "smallest tiniest smaller"}.items():
    for _w in _ws.split():
        _SUP_WORDS[_w] = _kind
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "1st": 1, "2nd": 2,
             "3rd": 3, "4th": 4, "5th": 5, "6th": 6}
_DETS = frozenset(["a", "an", "the", "this", "that", "these", "those", "one"])
# words of a gap that carry no relation ("that is to the left of", "which is directly above")
_FILLERS = frozenset(["to", "the", "a", "an", "of", "on", "at", "in", "is", "are", "that", "which", "who", "it",
                      "its", "than", "located", "placed", "positioned", "sitting", "lying", "standing", "situated",
                      "directly", "just", "immediately", "slightly", "right-hand", "left-hand", "hand", "side",
                      "one", "appears", "seems", "image", "picture", "photo", "part", "half", "region", "section"])
_SEPARATORS = frozenset(["and", "or", "but", "while", "whereas"])
_PRO_HEADS = frozenset(["one", "ones", "thing", "things", "object", "objects", "shape", "shapes", "item", "items"])
# ReCLIP's NULL_KEYWORDS (+ photo, middle, left, right, top, bottom): chunks that name a part of the picture,
# not an object ("on the right side of the image")
NULL_HEADS = frozenset(["part", "image", "side", "picture", "half", "region", "section", "photo", "middle", "left",
                        "right", "top", "bottom"])
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*")


@dataclass(frozen=True)
class Vocabulary:
    """The words a model was trained to compose, for models that only know ``template`` names (the bundled
    shapes-clip only saw "<colour> <shape>"): a phrase naming only a noun, only an attribute or neither is
    expanded to every name it covers. From the model's ``clipkit.json`` → ``ground_vocabulary``."""

    attributes: tuple[str, ...]
    nouns: tuple[str, ...]
    template: str = "{attribute} {noun}"

    def names(self) -> list[str]:
        """Every name the template makes ("red circle", "orange circle", …), nouns outer."""
        return [self.template.format(attribute=a, noun=n) for n in self.nouns for a in self.attributes]

    @classmethod
    def from_meta(cls, meta: Mapping | None) -> Vocabulary | None:
        v = (meta or {}).get("ground_vocabulary")
        if not v:
            return None
        return cls(tuple(v["attributes"]), tuple(v["nouns"]), v.get("template", "{attribute} {noun}"))


@dataclass(frozen=True)
class NounPhrase(Phrase):
    """A noun phrase of an expression: ``text``/``start``/``end`` as :class:`Phrase` (span of the whole chunk),
    plus what CLIP scores: ``query`` (the chunk without superlative and ordinal words) and, with a
    :class:`Vocabulary`, the known ``attributes`` and ``noun`` it names."""

    query: str = ""
    attributes: tuple[str, ...] = ()
    noun: str | None = None
    null: bool = False  # names a part of the picture ("the image", "the left side"), not an object
    expanded: bool = False  # scored over several vocabulary names (it names a noun or an attribute alone)

    def queries(self, vocabulary: Vocabulary | None) -> list[str]:
        """The texts to score for this phrase (its box logit is the max over them): ``[query]``, or with a
        vocabulary every ``template`` name it covers ("circle" → "red circle", "orange circle", …)."""
        if vocabulary is None or (self.noun and self.attributes):
            return [self.query or self.text]
        attrs = self.attributes or vocabulary.attributes
        nouns = [self.noun] if self.noun else vocabulary.nouns
        return [self._det() + vocabulary.template.format(attribute=a, noun=n) for n in nouns for a in attrs]

    def competitors(self, vocabulary: Vocabulary | None) -> list[str]:
        """Every other name of the vocabulary (one the phrase does not cover), written as :meth:`queries` writes
        them: "the red circle" competes with "the red square", …, "the blue circle"; ``[]`` without one."""
        if vocabulary is None:
            return []
        covered = {q.lower() for q in self.queries(vocabulary)}
        every = [self._det() + name for name in vocabulary.names()]
        return [q for q in every if q.lower() not in covered]

    def _det(self) -> str:
        words = self.query.split()
        return words[0] + " " if words and words[0].lower() in _DETS else ""


@dataclass(frozen=True)
class Relation:
    """``phrases[subject]`` is ``kind`` (one of :data:`RELATIONS`) ``phrases[anchor]``; ``text`` is the relation's
    words in the caption at ``[start, end)``."""

    kind: str
    subject: int
    anchor: int
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Superlative:
    """``phrases[target]`` is the ``ordinal``-th ``kind`` (one of :data:`SUPERLATIVES`; ordinal 1 = the most)."""

    kind: str
    target: int
    ordinal: int
    text: str
    start: int
    end: int


@dataclass
class Expression:
    """A parsed caption: ``phrases`` (referent first when one is named), relations between them, superlatives,
    ``notes`` on words that were not understood, and ``parser`` ("rules" or "spacy")."""

    caption: str
    phrases: list[NounPhrase]
    relations: list[Relation] = field(default_factory=list)
    superlatives: list[Superlative] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parser: str = "rules"

    def relation_of(self, index: int) -> Relation | None:
        return next((r for r in self.relations if r.subject == index), None)

    def superlative_of(self, index: int) -> Superlative | None:
        return next((s for s in self.superlatives if s.target == index), None)


def _noun_phrase(caption: str, phrase: Phrase, vocabulary: Vocabulary | None
                 ) -> tuple[NounPhrase, tuple[str, int, int, int] | None]:
    """The phrase's scoring query and known words, and the superlative/ordinal inside it
    (kind, ordinal, start, end in caption) if any."""
    words = [(m.group(0), phrase.start + m.start(), phrase.start + m.end()) for m in _WORD.finditer(phrase.text)]
    keep, sup, ordinal, marks = [], None, 1, []
    for i, (w, s, e) in enumerate(words):
        low = w.lower()
        last = i == len(words) - 1
        if low in _ORDINALS and not last:
            ordinal, marks = _ORDINALS[low], [*marks, (s, e)]
        elif low in _SUP_WORDS and not (last and low not in ("leftmost", "rightmost", "topmost", "bottommost")):
            sup, marks = _SUP_WORDS[low], [*marks, (s, e)]
        elif low in _ORDINALS:  # "the second" alone: an ordinal that heads the phrase
            ordinal, marks = _ORDINALS[low], [*marks, (s, e)]
        else:
            keep.append(w)
    if all(w.lower() in _DETS or w.lower() in _PRO_HEADS for w in keep):  # "the second from the left": any object
        keep = [w for w in keep if w.lower() in _DETS and w.lower() != "one"] + ["object"]
    query = " ".join(keep)
    attrs: tuple[str, ...] = ()
    noun = None
    if vocabulary is not None:
        low = [w.lower() for w in keep]
        attrs = tuple(w for w in low if w in vocabulary.attributes)
        noun = next((w for w in reversed(low) if w in vocabulary.nouns), None)  # "object" names no noun
        if noun is None and low and low[-1].rstrip("s") in vocabulary.nouns:
            noun = low[-1].rstrip("s")
    last = words[-1][0].lower() if words else ""
    np_ = NounPhrase(phrase.text, phrase.start, phrase.end, query=query or phrase.text, attributes=attrs,
                     noun=noun, null=last in NULL_HEADS and noun is None and not attrs,
                     expanded=vocabulary is not None and not (noun and attrs))
    found = None
    if sup is not None or marks:
        found = (sup or "", ordinal, marks[0][0], marks[-1][1])
    return np_, found


def _gap_words(caption: str, start: int, end: int) -> list[tuple[str, int, int]]:
    return [(m.group(0).lower(), start + m.start(), start + m.end()) for m in _WORD.finditer(caption[start:end])]


def _direction(words: Sequence[tuple[str, int, int]]) -> tuple[str, int, int] | None:
    """A trailing direction ("on the left", "from the top", "at the bottom") → (superlative kind, start, end)."""
    for w, _s, e in words:
        if w in ("left", "right", "top", "bottom", "leftmost", "rightmost"):
            return _SUP_WORDS[w], words[0][1], e
    return None


def parse_expression(caption: str, phrases: Sequence[Phrase] | None = None, *,
                     vocabulary: Vocabulary | None = None, use_spacy: bool | None = None) -> Expression:
    """Parse ``caption`` into an :class:`Expression`.

    ``phrases``: noun phrases already found (spans into ``caption``; e.g. from
    :func:`clipkit.phrases.parse_phrases`); default: :func:`clipkit.phrases.noun_phrases`. A phrase whose span
    does not index ``caption`` is analysed on its own (no relations). Never raises on unknown words.

    >>> e = parse_expression("the circle left of the red square")
    >>> [p.text for p in e.phrases], [(r.kind, r.subject, r.anchor) for r in e.relations]
    (['the circle', 'the red square'], [('left of', 0, 1)])
    """
    parser = parser_name(use_spacy)  # the noun-phrase chunker; relations and superlatives are always rule-based
    if phrases is None:
        phrases = noun_phrases(caption, use_spacy=use_spacy)
    nps: list[NounPhrase] = []
    sups: list[Superlative] = []
    rels: list[Relation] = []
    notes: list[str] = []
    inline: list[tuple[str, int, int, int] | None] = []
    for p in phrases:
        anchored = caption[p.start:p.end] == p.text
        np_, found = _noun_phrase(caption if anchored else p.text, p if anchored else Phrase(p.text, 0, len(p.text)),
                                  vocabulary)
        if not anchored:
            np_ = NounPhrase(p.text, p.start, p.end, np_.query, np_.attributes, np_.noun, np_.null, np_.expanded)
            found = None if found is None else (found[0], found[1], p.start + found[2], p.start + found[3])
        nps.append(np_)
        inline.append(found)
    ordered = all(caption[p.start:p.end] == p.text for p in phrases) and all(
        a.end <= b.start for a, b in itertools.pairwise(phrases))
    real = [i for i, np_ in enumerate(nps) if not np_.null]
    for i, np_ in enumerate(nps):
        if np_.null:
            notes.append(f"{np_.text!r} names a part of the picture, not an object: not grounded")
            continue
        kind, ordinal, s, e = inline[i] or ("", 1, np_.start, np_.start)
        nxt = next((j for j in real if j > i), None)
        if not ordered:
            if kind:
                sups.append(Superlative(kind, i, ordinal, caption[s:e] if caption else np_.text, s, e))
            continue
        gap_end = nps[nxt].start if nxt is not None else len(caption)
        words = _gap_words(caption, np_.end, gap_end)  # a null phrase inside the gap is read as gap words
        separated = bool(re.search(r"[;.!?]", caption[np_.end:gap_end])) or any(w in _SEPARATORS for w, *_ in words)
        if "," in caption[np_.end:gap_end] and not separated:  # "A, left of B" relates; "A, B" lists
            separated = not any(w in _REL_WORDS for w, *_ in words)
        if separated:  # the gap ends at the separator: what precedes it may still be a trailing direction
            cut = next((k for k, (w, *_) in enumerate(words) if w in _SEPARATORS), len(words))
            words = words[:cut]
        content = [(w, s2, e2) for w, s2, e2 in words if w not in _FILLERS]
        if (words and words[0][0] == "from") or (content and (separated or nxt is None)
                                                and _direction(content) and all(
                    w in _SUP_WORDS or w == "from" for w, *_ in content)):
            d = _direction(words)
            if d is not None and not kind:
                kind, s, e = d[0], (s if inline[i] else d[1]), d[2]
                content = []
        if kind:
            sups.append(Superlative(kind, i, ordinal, caption[s:e], s, e))
        elif inline[i] is not None:
            notes.append(f"ordinal {caption[s:e]!r} without a direction (left, top, biggest …): ignored")
        if not content:
            continue
        kinds = {_REL_WORDS.get(w) for w, *_ in content}
        text_span = (content[0][1], content[-1][2])
        if nxt is not None and not separated and len(kinds) == 1 and None not in kinds:
            rels.append(Relation(kinds.pop(), i, nxt, caption[text_span[0]:text_span[1]], *text_span))
        else:
            what = caption[text_span[0]:text_span[1]]
            notes.append(f"relation {what!r} not understood: {np_.text!r} grounded as a plain noun phrase")
    return Expression(caption, nps, rels, sups, notes, parser)
