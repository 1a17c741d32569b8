"""Personal data in free text: found (for highlighting) and scrubbed (before text becomes training data).

Patterns, not a model: e-mail addresses, phone numbers, access tokens and keys, Slack user
mentions, and names where the text gives them away ("my name is …", "Dr. …", "Hi Anna,", a sign-off)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PiiKind = Literal["email", "phone", "token", "mention", "name"]


@dataclass(frozen=True)
class PiiSpan:
    kind: PiiKind
    start: int
    end: int
    text: str


# Up to four words in any alphabet ("José García", "McDonald", "O'Brien", "Zoë"); `_name_in` keeps
# the leading ones that are capitalised and not common words ("Hi Team," names nobody).
_WORD = r"[^\W\d_][\w'’]*"
_NAME = rf"{_WORD}(?:[ -]{_WORD}){{0,3}}"
_NOT_NAMES = frozenset("""all everyone everybody team teams folks guys there sir madam friends colleagues
    practices wishes regards new sure happy glad sorry here back not just still also monday tuesday wednesday
    thursday friday saturday sunday today tomorrow tonight later again the a an best kind warm many thanks""".split())
_PATTERNS: list[tuple[PiiKind, re.Pattern[str], int]] = [
    # (kind, pattern, group holding the personal part)
    ("token", re.compile(
        r"\b(?:xox[abposr]-[A-Za-z0-9-]{8,}|xapp-[A-Za-z0-9-]{8,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}"
        r"|AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
        r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{16,}"), 0),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), 0),
    # A phone number may end a sentence ("call +1 555 123 4567."), but a dot followed by a digit
    # continues a decimal or version number, which is not a phone number.
    ("phone", re.compile(r"(?<![\w.])(?:\+|\()?\d[\d ().-]{7,}\d(?!\w|\.\d)"), 0),
    ("mention", re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>"), 0),
    ("name", re.compile(rf"\b(?:[Mm]y name is|I am|I['’]m|[Cc]all me)\s+({_NAME})"), 1),   # a phone types ’
    ("name", re.compile(rf"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof)\.?\s+({_NAME})"), 1),
    ("name", re.compile(rf"(?:^|\n)\s*(?:Thanks|Thank you|Cheers|Regards|Best|Best regards),?\s*\n?\s*({_NAME})\s*$"), 1),
    # A greeting names a person only when a comma follows the name ("Hi Anna," but not "Hi all").
    ("name", re.compile(rf"(?:^|\n)\s*(?:Hi|Hello|Hey|Dear)\s+({_NAME}),"), 1),
]
# Digit runs that are not phone numbers: an IP address, a date (2024-05-01, 01.05.2024, 5/1/2024)
# and what follows it (a time), a decimal or a dotted build number, a range.
_NOT_PHONE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}|(?:\d{4}-\d{2}-\d{2}|\d{1,2}([./])\d{1,2}\1\d{2,4})\b.*"
                        r"|\d+(?:\.\d+)+|\d{4,}-\d{4,}")
_REPLACEMENT: dict[PiiKind, str] = {"email": "[email]", "phone": "[phone]", "token": "[secret]",
                                    "mention": "[person]", "name": "[name]"}


def find_pii(text: str) -> list[PiiSpan]:
    """Personal data in `text`, in order, without overlaps (the earlier, longer match wins)."""
    found: list[PiiSpan] = []
    for kind, pattern, group in _PATTERNS:
        for m in pattern.finditer(text):
            start, end = m.span(group)
            if kind == "phone" and (sum(ch.isdigit() for ch in m.group()) < 9 or _NOT_PHONE.fullmatch(m.group())):
                continue  # dates, amounts, decimals, versions, addresses and ranges are not phone numbers
            if kind == "name":
                end = start + len(_name_in(text[start:end]))
                if end == start:
                    continue
            found.append(PiiSpan(kind, start, end, text[start:end]))
    found.sort(key=lambda s: (s.start, -(s.end - s.start)))
    spans: list[PiiSpan] = []
    for span in found:
        if not spans or span.start >= spans[-1].end:
            spans.append(span)
    return spans


def _name_in(words: str) -> str:
    """The leading words that read as a name: capitalised, and not a common word."""
    kept = ""
    for m in re.finditer(rf"([ -]?)({_WORD})", words):
        if not m.group(2)[0].isupper() or m.group(2).lower() in _NOT_NAMES:
            break
        kept = words[:m.end()]
    return kept


def scrub(text: str) -> str:
    """`text` with each piece of personal data replaced by a placeholder such as `[email]`."""
    out, last = [], 0
    for span in find_pii(text):
        out += [text[last:span.start], _REPLACEMENT[span.kind]]
        last = span.end
    out.append(text[last:])
    return "".join(out)
