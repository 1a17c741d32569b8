"""Words as the cheap, deterministic checks count them (groundedness, quoting without a model,
token F1 and ROUGE-L), in any script, not only the Latin alphabet."""
from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")
_JOINED_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")   # "don't", "covid-19" as one
# Chinese and Japanese are written without spaces: a run of them is counted by its character pairs.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def words(text: str, *, joined: bool = False) -> list[str]:
    """Lower-cased words in reading order (`joined`: apostrophes and hyphens inside a word keep
    it whole); a run of Chinese or Japanese characters as its overlapping character pairs
    ("東京都" -> "東京", "京都")."""
    out: list[str] = []
    for word in (_JOINED_WORD if joined else _WORD).findall(text.lower()):
        if _UNSPACED.search(word):
            out += [a + b for a, b in zip(word, word[1:])] or [word]
        else:
            out.append(word)
    return out
