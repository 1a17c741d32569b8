"""Heading-aware chunking: each section is cut into pieces of at most `max_tokens` words with
`overlap` words repeated between neighbours, cut at paragraph or sentence ends where possible.
Every chunk's text starts with the document title and heading path, so a chunk read alone
(by the embedder, by full-text search, by the model) says what it is about. A piece the
embedder would truncate (dense prose, long numbers) is cut again until it fits its window."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from core.knowledge.parse import ParsedDocument

# Part of every document's content hash: raise it when the chunks made from a text change, so the
# next ingest cuts documents stored before again.
VERSION = 2
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|(?<=[。！？])|\n{2,}")   # Chinese and Japanese end sentences unspaced
# Longer "words" are blobs (an inlined image, a minified script), not text anyone asks about:
# kept whole, one could outgrow what Postgres indexes (a tsvector holds at most 1 MB).
MAX_WORD_CHARS = 1024   # a long link (SharePoint, tracking parameters) stays whole


@dataclass(frozen=True)
class Chunk:
    ord: int
    heading: str
    text: str     # title, heading path, then the passage
    body: str     # the passage alone
    label: str    # title and heading path: what the passage is about


def chunk_document(doc: ParsedDocument, max_tokens: int = 200, overlap: int = 40,
                   fits: Callable[[str], bool] = lambda text: True) -> list[Chunk]:
    """`fits(text)`: whether the embedder reads a chunk's text whole."""
    if overlap >= max_tokens:
        raise ValueError("chunk overlap must be smaller than the chunk size")
    chunks: list[Chunk] = []
    for section in doc.sections:
        prefix = f"{doc.title}\n{section.heading}" if section.heading else doc.title
        label = f"{doc.title} > {section.heading}" if section.heading else doc.title
        for body in _pieces_that_fit(section.text, max_tokens, overlap, lambda b: fits(f"{prefix}\n\n{b}")):
            chunks.append(Chunk(ord=len(chunks), heading=section.heading, text=f"{prefix}\n\n{body}",
                                body=body, label=label))
    return chunks


def _pieces_that_fit(text: str, max_tokens: int, overlap: int, fits: Callable[[str], bool]) -> list[str]:
    """The text cut at `max_tokens` words, or, while a piece would be truncated, cut evenly again
    a quarter smaller. Not when a piece never can fit: one word (a long URL, base64) or the
    title and heading fill the window alone."""
    pieces = split_text(text, max_tokens, overlap)
    while max_tokens > 8:
        unfit = [p for p in pieces if not fits(p)]
        if not unfit or any(not fits(max(p.split(), key=len)) for p in unfit):
            break
        max_tokens = max_tokens * 3 // 4
        overlap = min(overlap, max_tokens // 5)
        pieces = split_text(text, max_tokens, overlap)
    return pieces


def split_text(text: str, max_tokens: int, overlap: int) -> list[str]:
    """Pieces of at most `max_tokens` words (a word is our token: cheap, and at the default of
    200 most pieces fit the embedder's 256-wordpiece window; `chunk_document` cuts the rest)."""
    units = [u.strip() for u in _SENTENCE_END.split(text) if u and u.strip()]
    words_per_unit = [[w if len(w) <= MAX_WORD_CHARS else w[:MAX_WORD_CHARS] + "…" for w in u.split()] for u in units]
    pieces: list[list[str]] = []
    current: list[str] = []
    for words in words_per_unit:
        start = 0
        while len(words) - start > max_tokens:  # a sentence longer than a chunk: cut it hard
            if current:
                pieces.append(current)
                current = []
            pieces.append(words[start:start + max_tokens])
            start += max_tokens - overlap
        words = words[start:] if start else words
        if current and len(current) + len(words) > max_tokens:
            pieces.append(current)
            current = current[-overlap:] if overlap else []
            if len(current) + len(words) > max_tokens:
                current = []
        current = current + words
    if current:
        pieces.append(current)
    return [" ".join(p) for p in pieces]
