"""Turn files into documents: title, sections under their heading paths, metadata.

Markdown, plain text, HTML, PDF (pypdf) and JSONL records (`_id`, `title`, `text`,
optional `metadata`, `url`). Anything else, or anything unreadable, raises `ParseError`
with a message that names the file."""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".jsonl")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair, alone


class ParseError(ValueError):
    """A file or record that cannot be ingested; the message names it and says why."""


@dataclass(frozen=True)
class Section:
    heading: str   # heading path below the title, "Ordering > Delivery"; "" for the preamble
    text: str


@dataclass(frozen=True)
class ParsedDocument:
    source: str
    title: str
    sections: list[Section]
    url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(f"{s.heading}\n{s.text}" if s.heading else s.text for s in self.sections)


def parse_bytes(name: str, data: bytes, source: str | None = None) -> list[ParsedDocument]:
    """Parse one file's content; JSONL gives one document per valid record."""
    source = source or name
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED:
        raise ParseError(f"{name}: unsupported file type '{suffix or '(none)'}'; "
                         f"supported: {', '.join(SUPPORTED)}")
    if not data.strip():
        raise ParseError(f"{name}: the file is empty")
    if suffix == ".pdf":
        return [_pdf(name, data, source)]
    if suffix in (".html", ".htm"):
        return [_html(name, _decode_html(name, data), source)]
    text = _decode(name, data)
    if suffix == ".jsonl":
        raise ParseError(f"{name}: JSONL is parsed record by record (use parse_jsonl)")
    if suffix in (".md", ".markdown"):
        return [_markdown(name, text, source)]
    return [_plain(name, text, source)]


def parse_jsonl(name: str, data: bytes, source: str) -> Iterator[ParsedDocument | ParseError]:
    """One document per valid line; an invalid line yields a ParseError naming its line number,
    as does a line repeating an earlier line's `_id` (the first one is kept)."""
    text = _decode(name, data)
    if not text.strip():  # refused like any empty file: re-ingesting it must not delete every record
        raise ParseError(f"{name}: the file is empty")
    first_line: dict[str, int] = {}
    for number, line in jsonl_lines(text):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield ParseError(f"{name}:{number}: invalid JSON ({e.msg})")
            continue
        if not isinstance(record, dict) or not _scalar_text(record.get("_id")) \
                or not str(record.get("text") or "").strip():
            yield ParseError(f"{name}:{number}: a record needs a non-empty '_id' and 'text'")
            continue
        metadata = _storable_json(record.get("metadata")) if isinstance(record.get("metadata"), dict) else {}
        url = record.get("url") or metadata.get("url")
        if url is not None and not isinstance(url, str):
            yield ParseError(f"{name}:{number}: 'url' must be a string, not {type(url).__name__}")
            continue
        record_id = storable(str(record["_id"]))
        if record_id in first_line:
            yield ParseError(f"{name}:{number}: '_id' {record_id!r} is already used on line {first_line[record_id]}")
            continue
        first_line[record_id] = number
        title = clean_text(str(record.get("title") or record["_id"])).strip()
        yield ParsedDocument(source=f"{source}#{record_id}", title=title,
                             sections=[Section("", clean_text(str(record["text"])).strip())],
                             url=storable(url) if url else None, metadata={**metadata, "record_id": record_id})


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of JSON Lines text with their numbers. Lines end at "\n" only: a
    U+2028 or U+0085 inside a string (as `json.dumps(ensure_ascii=False)` writes them) is text."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, line


def _scalar_text(value: object) -> str:
    """A record id as text: a string or number (0 included), stripped; '' for none."""
    return str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def clean_text(text: str) -> str:
    """Text as stored and searched: Unicode compatibility forms folded (the "ﬁ" ligature of PDF
    text is "fi", full-width digits are digits), and `storable`."""
    return storable(unicodedata.normalize("NFKC", text))


def storable(text: str) -> str:
    """`text` with NUL (which Postgres text cannot hold) dropped and lone surrogate halves (JSON
    written by JavaScript, a terminal that is not UTF-8) replaced, since they cannot be encoded."""
    return _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def _storable_json(value: Any) -> Any:
    """A JSON value with every string in it `storable` (jsonb cannot hold NUL either), as written."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    return value


def _decode(name: str, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # a byte-order mark: UTF-16, as Windows tools save text
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise ParseError(f"{name}: not valid UTF-16 text (byte {e.start})") from e
    if b"\x00" in data[:4096]:
        raise ParseError(f"{name}: looks like a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ParseError(f"{name}: not valid UTF-8 text (byte {e.start})") from e


_READ_AS_CP1252 = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii",
                             "windows-1252", "cp1252"})


def _decode_html(name: str, data: bytes) -> str:
    """UTF-8, or the encoding the page declares (<meta charset>): pages saved from Word or
    Outlook are often windows-1252."""
    from bs4.dammit import EncodingDetector

    try:
        return _decode(name, data)
    except ParseError:
        declared = EncodingDetector.find_declared_encoding(data, is_html=True)
        if b"\x00" in data[:4096] or not declared:
            raise
        # As browsers read it (the WHATWG Encoding Standard): a page that says latin-1 or ascii is
        # windows-1252, whose curly quotes Word writes.
        encoding = "cp1252" if declared.lower() in _READ_AS_CP1252 else declared
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError) as e:
            raise ParseError(f"{name}: not valid {declared} text, as the page declares") from e


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")   # `## Using C#` keeps its #
_MD_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)\s*$")                       # setext: Title, then === or ---
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def _markdown(name: str, text: str, source: str, fallback_title: str = "") -> ParsedDocument:
    front_title, text = _front_matter(text)
    title, sections = _markdown_sections(text)
    return _document(name, source, title or front_title or fallback_title, sections)


def _front_matter(text: str) -> tuple[str, str]:
    """YAML front matter (a static site's `---` block at the top): its title, and the text
    without it. Not a document's words, so not searched."""
    import yaml

    match = _FRONT_MATTER.match(text)
    if match is None:
        return "", text
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return "", text   # a thematic break and a paragraph, after all
    if not isinstance(meta, dict):
        return "", text
    title = meta.get("title")
    return (str(title).strip() if isinstance(title, (str, int, float)) else ""), text[match.end():]


def _markdown_sections(text: str) -> tuple[str, list[Section]]:
    """The first `# ` heading as title, and the text under each heading path."""
    title = ""
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    body: list[str] = []
    fence: str | None = None   # the marker of the code block we are in

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(Section(" > ".join(h for _, h in stack), content))
        body.clear()

    for line in text.splitlines():
        stripped = line.lstrip(" ")
        marker = stripped[:3] if len(line) - len(stripped) <= 3 else ""   # indented 4 or more: not a fence
        if marker in ("```", "~~~") and fence in (None, marker):   # a fence closes with its own marker
            fence = None if fence else marker
        match = None if fence else _MD_HEADING.match(line)
        underline = None if fence or match else _MD_UNDERLINE.match(line)
        if underline and body and _setext_text(body[-1]) and (len(body) < 2 or not body[-2].strip()):
            level, heading = (1 if underline.group(1)[0] == "=" else 2), body.pop().strip()
        elif match is None:
            body.append(line)
            continue
        else:
            level, heading = len(match.group(1)), match.group(2).strip()
        if level == 1 and not title:
            flush()
            title = heading
            continue
        flush()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
    flush()
    return title, sections


def _setext_text(line: str) -> bool:
    """Whether `line` can be a setext heading's text: a one-line paragraph, not a list item,
    quote or table row (a `---` under those is a rule or a table's divider)."""
    stripped = line.strip()
    return bool(stripped) and len(line) - len(line.lstrip(" ")) <= 3 and not re.match(r"([-*+>|]|\d+[.)])(\s|$)", stripped)


def _plain(name: str, text: str, source: str) -> ParsedDocument:
    lines = text.strip().splitlines()
    title = lines[0].strip() if lines and len(lines[0]) < 120 else ""
    rest = "\n".join(lines[1:] if title else lines).strip()
    return _document(name, source, title, [Section("", rest or text.strip())])


# HTML elements read as one line each, and the inline ones that never break a line.
_HTML_LINES = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "tr", "pre", "blockquote"]
_HTML_INLINE = frozenset({"a", "abbr", "acronym", "b", "bdi", "bdo", "big", "br", "button", "cite", "code", "data",
                          "del", "dfn", "em", "font", "i", "img", "input", "ins", "kbd", "label", "mark", "nobr",
                          "output", "q", "rp", "rt", "ruby", "s", "samp", "small", "span", "strike", "strong", "sub",
                          "sup", "time", "tt", "u", "var", "wbr"})


def _html(name: str, text: str, source: str) -> ParsedDocument:
    from bs4 import BeautifulSoup, NavigableString, Tag

    soup = BeautifulSoup(text, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    # An article's own heading often sits in its <header>, which goes with the site's banner below.
    title = next((h.get_text(" ", strip=True) for h in soup.find_all("h1") if h.find_parent("header")), "") or title
    for tag in soup(["script", "style", "nav", "footer", "header", "noscript", "head", "title", "select", "textarea"]):
        tag.decompose()
    lines: list[str] = []
    loose: list[str] = []  # text outside those elements (a bare div, dt, dd), by the block it is in
    loose_in: Tag | None = None
    for node in soup.descendants:
        if isinstance(node, Tag) and node.name in _HTML_LINES:
            if node.name in ("p", "li") and node.find_parent(["li", "td", "th", "blockquote"]) is not None:
                continue  # nested: its text is in the parent's
            lines += _joined(loose)
            lines += _html_line(node)
        elif type(node) is NavigableString and node.strip() and node.find_parent(_HTML_LINES) is None:
            block = next(p for p in node.parents if p.name not in _HTML_INLINE)
            if block is not loose_in:
                lines += _joined(loose)
                loose_in = block
            loose.append(node)
        elif isinstance(node, Tag) and node.name == "br":
            loose.append(" ")
    lines += _joined(loose)
    h1, sections = _markdown_sections("\n\n".join(lines))
    return _document(name, source, h1 or title, sections)


def _html_line(element: Any) -> list[str]:
    if element.name == "tr":  # a table row reads as one line, cells side by side
        words = " | ".join(c.get_text(" ", strip=True) for c in element.find_all(["td", "th"]))
    else:
        words = element.get_text(" ", strip=True)
    if not words:
        return []
    if element.name[0] == "h":
        return [f"{'#' * int(element.name[1])} {words}"]
    return [f"- {words}" if element.name == "li" else _not_a_heading(words)]


def _joined(pieces: list[str]) -> list[str]:
    """The pieces as one line of single-spaced words, as a browser shows them (none if blank);
    empties the list."""
    words = " ".join("".join(pieces).split())
    pieces.clear()
    return [_not_a_heading(words)] if words else []


def _not_a_heading(line: str) -> str:
    """Text of a paragraph or table row that starts with "#" ("# of days: 25", a "#" column),
    or with a code fence's marker (a decorative "~~~"), must not read as Markdown on its way
    through `_markdown_sections`."""
    if line.startswith(("```", "~~~")):
        return f"    {line}"
    return f" {line}" if line.startswith("#") else line


def _pdf(name: str, data: bytes, source: str) -> ParsedDocument:
    import io

    from pypdf import PdfReader

    if not data.lstrip().startswith(b"%PDF"):
        raise ParseError(f"{name}: not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        # Many published PDFs are encrypted with only an owner password (no printing, say):
        # they open with an empty user password. Only a PDF that needs a password is refused.
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"{name}: the PDF is protected by a password; remove it and ingest the file again")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or ""
    except ParseError:
        raise
    except Exception as e:  # pypdf raises many kinds on damaged files (PdfReadError, NotImplementedError, ...)
        detail = str(e) or type(e).__name__
        raise ParseError(f"{name}: unreadable PDF ({detail})") from e
    if not pages:
        raise ParseError(f"{name}: the PDF has no pages")
    if not any(p.strip() for p in pages):
        raise ParseError(f"{name}: the PDF has no extractable text (scanned images need OCR first)")
    # PDFs carry no reliable heading structure; "# " lines are kept as headings when the text has them.
    h1, sections = _markdown_sections("\n\n".join(pages))
    meta_title = "" if _MADE_UP_TITLE.match(meta_title.strip()) else meta_title.strip()
    return _document(name, source, meta_title or h1, sections)


# PDF titles a converter made up rather than an author wrote: the file it was printed from.
_MADE_UP_TITLE = re.compile(r"(microsoft (word|powerpoint|excel) - .*|untitled.*|.*\.(docx?|pptx?|xlsx?|odt|rtf|pdf))?$",
                            re.IGNORECASE)


def _document(name: str, source: str, title: str, sections: list[Section]) -> ParsedDocument:
    sections = [Section(clean_text(s.heading), clean_text(s.text)) for s in sections]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise ParseError(f"{name}: no text to ingest")
    return ParsedDocument(source=source, sections=sections,
                          title=clean_text(title) or Path(name).stem.replace("-", " ").replace("_", " "))
