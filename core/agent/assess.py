"""Pure checks on a draft: is it grounded in its sources, does it touch a sensitive topic."""
from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CITATION = re.compile(r"\[\d+\]")
# Words that carry no claim: a sentence is judged by the rest.
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its "
    "this that these those you your we our they their he she his her i me my can could should would will "
    "shall may might must do does did not no yes so than then there here what which who whom whose when "
    "where why how all any each every some such about into over under up down out also just only".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def groundedness(draft: str, sources: Sequence[str], min_overlap: float = 0.6) -> float:
    """Share of the draft's sentences whose content words mostly appear in the sources (0..1).
    A cheap, deterministic check: it catches answers that talk about things no source mentions."""
    source_words = set().union(*(content_words(s) for s in sources)) if sources else set()
    sentences = [s for s in _SENTENCE.split(_CITATION.sub("", draft)) if content_words(s)]
    if not sentences:
        return 0.0
    supported = 0
    for sentence in sentences:
        words = content_words(sentence)
        if len(words & source_words) / len(words) >= min_overlap:
            supported += 1
    return supported / len(sentences)


def sensitive_topic(text: str, topics: Sequence[str]) -> str | None:
    """The first configured topic the text mentions as a whole word or phrase, or None."""
    lowered = text.lower()
    for topic in topics:
        if re.search(rf"\b{re.escape(topic.lower())}(s|es)?\b", lowered):
            return topic
    return None
