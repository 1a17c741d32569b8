"""Words as the cheap, deterministic checks count them (groundedness, quoting without a model,
token F1 and ROUGE-L): in scripts written with spaces between words (Latin, Cyrillic, Greek,
Hangul...), not only the Latin alphabet, and in Chinese and Japanese. (Scripts whose vowel signs
are combining marks, such as Devanagari, fall apart into letters.)"""
from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")
_JOINED_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")   # "don't", "covid-19" as one
# Chinese and Japanese are written without spaces: a run of them is counted by its character pairs.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_DIGITS_OR_LETTERS = re.compile(r"\d+|[^\W\d_]+")


def words(text: str, *, joined: bool = False) -> list[str]:
    """Lower-cased words in reading order (`joined`: apostrophes and hyphens inside a word keep
    it whole); a run of Chinese or Japanese characters as its overlapping character pairs
    ("東京都" -> "東京", "京都")."""
    out: list[str] = []
    for word in (_JOINED_WORD if joined else _WORD).findall(text.lower()):
        if not _UNSPACED.search(word):
            out.append(word)
            continue
        for part in _DIGITS_OR_LETTERS.findall(word):   # "5営業日": the number stays a word of its own
            out += [part] if part.isdigit() else [a + b for a, b in zip(part, part[1:])] or [part]
    return out
