"""Pure checks on a draft: is it grounded in its sources, does it touch a sensitive topic."""
from __future__ import annotations

import re
from collections.abc import Sequence

from core.text import words

_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
_CITATION = re.compile(r"\[\d+\]")
_TERSE = 3   # a number with fewer words than this beside it is read with the question
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}[.)]|[-*•])\s+", re.MULTILINE)   # "1. ", "2) ", "- ": not claims
# Words that carry no claim: a sentence is judged by the rest.
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its "
    "this that these those you your we our they their he she his her i me my can could should would will "
    "shall may might must do does did not no yes so than then there here what which who whom whose when "
    "where why how all any each every some such about into over under up down out also just only many much "
    "it's that's there's here's".split()
)


def content_words(text: str) -> set[str]:
    """The words that carry a claim, a plural or third-person "s" taken off ("takes" and "take",
    "days" and "day" are one word here)."""
    words_ = words(text.replace("\u2019", "'"), joined=True)   # "it’s" as "it's"
    return {_singular(w) for w in words_ if w not in _STOP and (len(w) > 1 or w.isdigit())}   # "2" is a claim


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def groundedness(draft: str, sources: Sequence[str], min_overlap: float = 0.6, *, question: str = "") -> float:
    """Share of the draft's sentences (0..1) supported by one passage of a source: two adjacent
    source sentences must hold most of the sentence's content words and every number in it.
    Cheap and deterministic; it catches drafts that mix true words into a claim no source makes
    ("delivery in Toronto takes 2 hours" when the source says seven working days). A number
    with hardly a word beside it ("10.", "25 days total") answers the question: the passage
    holding it must also hold half of the question's words, so it is grounded only in a passage
    about what was asked."""
    windows = [content_words(w) for source in sources for w in _windows(source)]
    sentences = [s for s in _SENTENCE.split(_LIST_MARKER.sub("", _CITATION.sub("", draft))) if content_words(s)]
    if not sentences or not windows:
        return 0.0
    asked = content_words(question)
    supported = 0
    for sentence in sentences:
        words = content_words(sentence)
        numbers = {w for w in words if w.isdigit()}
        terse = bool(numbers and asked) and len(words - numbers) < _TERSE
        for window in windows:
            if numbers <= window and len(words & window) / len(words) >= min_overlap \
                    and (not terse or len(asked & window) >= len(asked) / 2):
                supported += 1
                break
    return supported / len(sentences)


def _windows(text: str) -> list[str]:
    """Each sentence with the one after it: a claim may span two sentences of a source."""
    sentences = [s for s in _SENTENCE.split(text) if s.strip()]
    return [" ".join(sentences[i:i + 2]) for i in range(max(1, len(sentences) - 1))] or [text]


def sensitive_topic(text: str, topics: Sequence[str]) -> str | None:
    """The first configured topic the text mentions as a whole word or phrase, or None."""
    lowered = text.lower()
    for topic in topics:
        if re.search(rf"\b{re.escape(topic.lower())}(s|es)?\b", lowered):
            return topic
    return None
