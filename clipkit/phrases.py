"""Caption → noun phrases with character spans, offline (used by ``ground``).

GLIP (microsoft/GLIP, ``maskrcnn_benchmark/engine/predictor_glip.py``: ``find_noun_phrases`` / ``run_ner``)
lower-cases the caption, strips punctuation, POS-tags it with NLTK and chunks it with the grammar
``NP: {<DT>?<JJ.*>*<NN.*>+}``; each phrase is then located in the caption to get its character span. A list of
names is joined as ``"a . b . c . "`` (separator ``" . "``) and each name's span is recorded while joining.

NLTK's tagger data cannot be downloaded here, so :func:`rule_chunks` replaces the statistical tagger with
closed-class word lists (determiners, pronouns, prepositions, conjunctions, auxiliaries and common verbs,
spatial relation words): every open-class word is tagged adjective-or-noun, and a maximal run of them, with an
optional leading determiner, is one NP whose last word is the head noun — the same shape the GLIP grammar
accepts (``DT? JJ* NN+``). This is a deviation: an open-class verb ("a dog chases a cat") is not recognised
unless it is in the list or ends in a common verb suffix after a complete NP. When spaCy and an English model
(``en_core_web_sm`` …) are importable, :func:`noun_phrases` uses spaCy's ``noun_chunks`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Phrase", "glip_join", "glip_split", "noun_phrases", "parse_phrases", "parser_name", "rule_chunks"]


@dataclass(frozen=True)
class Phrase:
    """One phrase and its character span in the caption: ``caption[start:end] == text`` (end exclusive)."""

    text: str
    start: int
    end: int

    @property
    def span(self) -> list[int]:
        return [self.start, self.end]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DETERMINERS = _words("""a an the this that these those each every some any no another either neither
both all my your his her its our their
one two three four five six seven eight nine ten several many few""")
_PRONOUNS = _words("""i you he she it we they me him us them mine yours hers ours theirs itself themselves
something anything nothing everything someone anyone there here
which who whom whose what where when""")
_PREPOSITIONS = _words("""of in on at by for with without from to into onto over under above below beneath
beside besides between among amongst around about across along against behind near inside outside within
through toward towards upon off up down out than like via beyond past underneath atop""")
# relation / direction words that head no object in these captions ("left of", "next to", "on top of")
_RELATIONS = _words("""left right top bottom front back next close far middle center centre side
leftmost rightmost topmost bottommost nearest closest adjacent""")
_NULL_HEADS = _words("part image side picture half region section photo middle left right top bottom")
_CONJUNCTIONS = _words("and or but nor so yet while whereas because if then also")
_VERBS = _words("""is are was were be been being am has have had do does did can could will would shall
should may might must sits sit sitting lies lie lying stands stand standing appears appear shown shows show
placed located positioned touches touch touching holds hold holding contains contain
looks look seen""")
_ADVERBS = _words("""not very just only slightly directly immediately exactly almost nearly quite
too also""")
# common adjectives: a run that ends in one has no head noun ("the circle is red"), as JJ without NN in GLIP
_ADJECTIVES = _words("""red orange yellow green cyan blue purple pink white black grey gray brown violet
big small large tiny little huge dark light bright pale round empty""")
_CLOSED = _PRONOUNS | _PREPOSITIONS | _CONJUNCTIONS | _VERBS | _ADVERBS
# comparatives end a chunk when a comparison follows ("the square bigger than the circle")
_COMPARATIVES = _words("bigger larger smaller tinier higher lower greater")
# "one" heads a chunk after a modifier ("the red one"); elsewhere it is a number ("one red circle")
_PRO_NOUNS = _words("one ones")

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*")


def rule_chunks(caption: str) -> list[Phrase]:
    """Rule-based ``DT? (JJ|NN)+`` chunks with spans into the original ``caption``; punctuation breaks chunks.

    A relation word ("left", "top", "next" …) modifies the noun ("the left circle", "the leftmost square")
    unless it heads a relation ("left of", "next to") or closes the chunk ("the circle on the left").

    >>> [p.text for p in rule_chunks("A red circle left of a blue square.")]
    ['A red circle', 'a blue square']
    """
    toks = list(_TOKEN.finditer(caption))
    words = [m.group(0).lower() for m in toks]
    phrases: list[Phrase] = []
    run: list[re.Match[str]] = []  # open-class words of the current chunk
    det: re.Match[str] | None = None  # determiner directly before the run

    def close() -> None:
        nonlocal run, det
        while run and run[-1].group(0).lower() in _ADJECTIVES:  # no noun after them: not part of an NP
            run.pop()
        if run:
            start = (det or run[0]).start()
            end = run[-1].end()
            phrases.append(Phrase(caption[start:end], start, end))
        run, det = [], None

    for i, (m, word) in enumerate(zip(toks, words, strict=True)):
        gap = caption[toks[i - 1].end():m.start()] if i else ""
        if re.search(r"[^\s]", gap):  # punctuation between words ends a chunk (GLIP strips it)
            close()
        nxt = words[i + 1] if i + 1 < len(words) else None
        next_gap = caption[m.end():toks[i + 1].start()] if nxt is not None else ""
        if word in _PRO_NOUNS and run:
            run.append(m)
        elif word in _COMPARATIVES and nxt == "than":
            close()
        elif word in _DETERMINERS:
            close()
            det = m
        elif word in _RELATIONS and word not in _CLOSED:
            ends = nxt is None or re.search(r"[^\s]", next_gap) is not None
            if ends or nxt in ("of", "to") or nxt in _CLOSED or (nxt in _DETERMINERS and nxt not in _PRO_NOUNS):
                close()
            else:
                run.append(m)
        elif word in _CLOSED:
            close()
        else:
            run.append(m)
    close()
    return phrases


@lru_cache(maxsize=1)
def _spacy_nlp():  # pragma: no cover - depends on an optional user install
    try:
        import spacy
    except ImportError:
        return None
    for name in ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_trf"):
        try:
            return spacy.load(name)
        except Exception:
            continue
    return None


def parser_name(use_spacy: bool | None = None) -> str:
    """Which chunker :func:`noun_phrases` runs with ``use_spacy``: ``"spacy"`` or ``"rules"``."""
    return "spacy" if use_spacy is not False and _spacy_nlp() is not None else "rules"


def noun_phrases(caption: str, *, use_spacy: bool | None = None) -> list[Phrase]:
    """Noun phrases of ``caption`` with spans: spaCy noun chunks when available (``use_spacy=None`` = auto,
    ``True`` = require it, ``False`` = never), else :func:`rule_chunks`."""
    nlp = _spacy_nlp() if use_spacy is not False else None
    if use_spacy and nlp is None:
        raise RuntimeError("spaCy with an English model (e.g. en_core_web_sm) is not installed")
    if nlp is None:
        return rule_chunks(caption)
    doc = nlp(caption)  # pragma: no cover
    return [Phrase(c.text, c.start_char, c.end_char) for c in doc.noun_chunks]  # pragma: no cover


def glip_join(labels: Sequence[str]) -> tuple[str, list[Phrase]]:
    """GLIP's label prompt: ``"a . b . c . "`` and each label's span in it."""
    caption, phrases = "", []
    for label in labels:
        label = label.strip()
        if not label:
            continue
        phrases.append(Phrase(label, len(caption), len(caption) + len(label)))
        caption += label + " . "
    return caption, phrases


def glip_split(text: str) -> list[Phrase] | None:
    """If ``text`` is a GLIP label prompt (``"a . b ."``, names separated by ``" . "``), its names with spans;
    otherwise ``None``."""
    if not re.search(r"\s\.(\s|$)", text):
        return None
    out = []
    for m in re.finditer(r"[^.]+", text):
        piece = m.group(0)
        stripped = piece.strip()
        if stripped:
            start = m.start() + (len(piece) - len(piece.lstrip()))
            out.append(Phrase(stripped, start, start + len(stripped)))
    return out


def parse_phrases(caption: str | None = None, phrases: str | Sequence[str] | None = None, *,
                  use_spacy: bool | None = None) -> tuple[str, list[Phrase]]:
    """Resolve ``ground``'s input to ``(caption, phrases)``.

    - explicit ``phrases`` (a list, or one string split on ``;``): located in ``caption`` when given (first
      occurrence at or after the previous match, case-insensitive), else joined GLIP-style into the caption;
    - a ``caption`` in GLIP label form (``"a . b ."``): its names;
    - any other ``caption``: its noun phrases.
    Raises ``ValueError`` when nothing usable is given or no phrase is found.
    """
    if phrases is not None:
        items = [p.strip() for p in (phrases.split(";") if isinstance(phrases, str) else phrases)]
        items = [p for p in items if p]
        if not items:
            raise ValueError("--phrases is empty; give phrases separated by ';'")
        if not caption:
            return glip_join(items)
        found, pos, low = [], 0, caption.lower()
        for p in items:
            i = low.find(p.lower(), pos)
            if i < 0:
                i = low.find(p.lower())
            if i < 0:
                raise ValueError(f"phrase {p!r} does not occur in the caption {caption!r}")
            found.append(Phrase(caption[i:i + len(p)], i, i + len(p)))
            pos = i + len(p)
        return caption, found
    if not caption or not caption.strip():
        raise ValueError("give a caption (--caption) or phrases (--phrases 'a;b')")
    out = glip_split(caption)
    if out is None:
        out = noun_phrases(caption, use_spacy=use_spacy)
        # ReCLIP's null keywords: "the image", "the left side" name a part of the picture, not an object
        objects = [p for p in out if p.text.lower().split()[-1] not in _NULL_HEADS]
        out = objects or out
    if not out:
        raise ValueError(f"no noun phrase found in the caption {caption!r}; pass --phrases explicitly")
    return caption, out
