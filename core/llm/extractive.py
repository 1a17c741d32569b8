"""Answers without a model: quote the passages that best match the question, with citations.

Used when configured (`FLYWHEEL_LLM_BACKEND=extractive`) and whenever the model server is
unreachable, so a question never goes unanswered because a GPU box is down."""
from __future__ import annotations

import re
from collections.abc import Sequence

from core.text import words

# A sentence ends at . ! ? before anything but a lower-case Latin letter ("e.g. this"), or at 。！？
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[^\W_a-z]|[\"'(“])|(?<=[。！？])|\n+")
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been it its this that "
    "these those you your we our they i me my do does did can could should would will how what when "
    "where why who which there here about into any some".split()
)


def _words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOP}


def extractive_answer(question: str, sources: Sequence[tuple[str, str]], max_sentences: int = 3) -> str:
    """Quote up to `max_sentences` sentences from the sources, best overlap with the question
    first, each cited as [n] (n = position in `sources`, from 1)."""
    asked = _words(question)
    scored: list[tuple[float, int, int, str]] = []
    for n, (title, text) in enumerate(sources, start=1):
        body = text.split("\n\n", 1)[-1] if text.startswith(title) else text  # chunks repeat the title
        for position, sentence in enumerate(s.strip() for s in _SENTENCE.split(body)):
            words = _words(sentence)
            if len(words) < 3:
                continue
            overlap = len(asked & words) / (len(asked) or 1)
            if overlap == 0:   # shares no word with the question: quoting it would mislead
                continue
            # Earlier sources ranked higher in retrieval: a small bonus keeps their order on ties.
            scored.append((overlap + 0.05 / n, n, position, sentence))
    if not scored:
        return "I found related documents but no passage that answers this directly: see the sources below."
    best = sorted(scored, key=lambda s: (-s[0], s[1], s[2]))[:max_sentences]
    best.sort(key=lambda s: (s[1], s[2]))  # read in document order
    return " ".join(f"“{sentence}” [{n}]" for _, n, _, sentence in best)
