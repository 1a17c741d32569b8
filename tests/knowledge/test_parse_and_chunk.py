"""Parsing and chunking, the pure pieces."""
from __future__ import annotations

import pytest

from core.knowledge.chunk import chunk_document, split_text
from core.knowledge.parse import ParseError, parse_bytes

MARKDOWN = b"""# Laptops

Intro line.

## Ordering
Use the portal.

### Delivery
Five days.

## Returns
Bring it back.
"""


def test_markdown_sections_carry_their_heading_path() -> None:
    [doc] = parse_bytes("laptops.md", MARKDOWN)
    assert doc.title == "Laptops"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("", "Intro line."), ("Ordering", "Use the portal."), ("Ordering > Delivery", "Five days."),
        ("Returns", "Bring it back."),
    ]


def test_a_static_sites_front_matter_gives_the_title_and_is_not_read_as_text() -> None:
    [doc] = parse_bytes("leave.md", b"---\ntitle: Leave policy\nowner: people-team\n---\n\nIntro.\n\n"
                                    b"## Annual leave\n25 days.\n")
    assert doc.title == "Leave policy"
    assert [(s.heading, s.text) for s in doc.sections] == [("", "Intro."), ("Annual leave", "25 days.")]


def test_underlined_headings_are_headings_and_a_rule_is_not() -> None:
    [doc] = parse_bytes("leave.md", b"Leave policy\n============\n\nIntro.\n\nAnnual leave\n------------\n25 days.\n"
                                    b"\n- one item\n---\n\nAfter the rule.\n")
    assert doc.title == "Leave policy"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("", "Intro."), ("Annual leave", "25 days.\n\n- one item\n---\n\nAfter the rule.")]


def test_a_heading_ending_in_a_hash_keeps_it_unless_the_hashes_close_it() -> None:
    [doc] = parse_bytes("tools.md", b"# Tools\n\n## Using C#\nVisual Studio.\n\n## Closed ##\nDone.\n")
    assert [s.heading for s in doc.sections] == ["Using C#", "Closed"]


def test_a_pdf_titled_by_the_converter_after_its_word_file_is_titled_as_a_person_would() -> None:
    import io
    from pathlib import Path

    from pypdf import PdfWriter

    printed = PdfWriter(clone_from=Path(__file__).resolve().parents[2] / "samples" / "handbook" / "security"
                        / "travel-security.pdf")
    printed.add_metadata({"/Title": "Microsoft Word - travel.docx"})
    data = io.BytesIO()
    printed.write(data)
    [doc] = parse_bytes("travel-security.pdf", data.getvalue())
    assert doc.title == "travel security"   # its file name, not the converter's


def test_an_html_articles_heading_in_its_header_is_its_title_not_the_sites_name() -> None:
    [doc] = parse_bytes("leave.html", b"<html><head><title>Northwind | Intranet</title></head><body><header>"
                                      b"<a href='/'>Home</a><h1>Parental leave</h1></header><p>Sixteen weeks.</p>"
                                      b"</body></html>")
    assert doc.title == "Parental leave" and [s.text for s in doc.sections] == ["Sixteen weeks."]


def test_chunk_text_starts_with_title_and_heading_path() -> None:
    [doc] = parse_bytes("laptops.md", MARKDOWN)
    chunks = chunk_document(doc)
    delivery = next(c for c in chunks if c.heading == "Ordering > Delivery")
    assert delivery.text == "Laptops\nOrdering > Delivery\n\nFive days."
    assert delivery.label == "Laptops > Ordering > Delivery"


def test_long_sections_split_within_budget_with_overlap() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    pieces = split_text(text, max_tokens=50, overlap=10)
    assert all(len(p.split()) <= 50 for p in pieces)
    assert len(pieces) > 10
    for first, second in zip(pieces, pieces[1:]):
        assert second.split()[:10] == first.split()[-10:]  # neighbours share `overlap` words


def test_dense_text_is_cut_until_every_chunk_fits_the_embedders_window() -> None:
    from core.knowledge import embed

    # 190 words but 882 wordpieces: at 200 words a chunk, most of it would not be embedded.
    dense = " ".join(f"Immunohistochemistry{i} matters." for i in range(95))
    [doc] = parse_bytes("lab.md", f"# Lab codes\n\n{dense} Bicycles park on level minus one.\n".encode())
    assert not embed.fits_window(chunk_document(doc)[0].text)
    chunks = chunk_document(doc, fits=embed.fits_window)
    assert all(embed.fits_window(c.text) for c in chunks)
    assert 4 <= len(chunks) <= 5  # 882 wordpieces need 4 windows at the least: cut evenly, not shredded
    assert chunks[-1].body.endswith("Bicycles park on level minus one.")
    assert " ".join(c.body for c in chunks).count("matters.") >= 95  # nothing lost, overlaps repeated


def test_a_heading_too_long_for_the_embedders_window_does_not_shred_its_section() -> None:
    from core.knowledge import embed

    heading = " ".join(f"Subsection{i}qz" for i in range(120))  # the title and heading alone overflow the window
    [doc] = parse_bytes("long.md", f"# Doc\n\n## {heading}\n\n".encode() + b"Short rule one. " * 120)
    assert len(chunk_document(doc, fits=embed.fits_window)) == len(chunk_document(doc))


def test_html_tables_read_row_by_row() -> None:
    html = b"<html><head><title>Rates</title></head><body><h2>Per day</h2><table><tr><th>Where</th><th>Rate</th></tr>" \
           b"<tr><td>Portugal</td><td>45 EUR</td></tr></table><script>x()</script></body></html>"
    [doc] = parse_bytes("rates.html", html)
    assert doc.title == "Rates"
    assert doc.sections[0].heading == "Per day"
    assert "Portugal | 45 EUR" in doc.sections[0].text and "x()" not in doc.text


def test_html_text_starting_with_a_hash_is_not_read_as_a_heading() -> None:
    html = (b"<html><head><title>Onboarding checklist</title></head><body><h2>Benefits</h2>"
            b"<p># of vacation days: 25</p><p>~~~</p><table><tr><th>#</th><th>Step</th></tr><tr><td>1</td>"
            b"<td>Badge</td></tr></table><div># loose text</div><h2>Leave</h2><p>Ask HR.</p></body></html>")
    [doc] = parse_bytes("onboarding.html", html)
    assert doc.title == "Onboarding checklist" and [s.heading for s in doc.sections] == ["Benefits", "Leave"]
    assert [line.strip() for line in doc.sections[0].text.split("\n\n")] == [
        "# of vacation days: 25", "~~~", "# | Step", "1 | Badge", "# loose text"]


def test_a_markdown_code_block_fenced_with_tildes_holds_no_headings() -> None:
    [doc] = parse_bytes("client.md", b"# VPN client\n\n~~~bash\n# install the client\napt install vpn\n~~~\n\n"
                                     b"## Signing in\n\nUse Okta.\n\n```\n~~~ not a fence end\n# still code\n```\n")
    assert doc.title == "VPN client" and [s.heading for s in doc.sections] == ["", "Signing in"]
    assert "# install the client" in doc.sections[0].text and "# still code" in doc.sections[1].text


def test_html_text_outside_paragraphs_is_kept_block_by_block() -> None:
    html = (b"<html><head><title>Wiki</title></head><body><div class=page>Welcome to the <b>wiki</b>."
            b"<div>Ask <span>IT</span> first.</div>Then<br>HR.<h2>Terms</h2><dl><dt>PTO</dt><dd>Paid time off, 25 days."
            b"</dd></dl><p>A paragraph.</p> Trailing words <!-- a comment --></div></body></html>")
    [doc] = parse_bytes("wiki.html", html)
    assert doc.title == "Wiki"
    assert [(s.heading, s.text.split("\n\n")) for s in doc.sections] == [
        ("", ["Welcome to the wiki.", "Ask IT first.", "Then HR."]),
        ("Terms", ["PTO", "Paid time off, 25 days.", "A paragraph.", "Trailing words"])]
    [form] = parse_bytes("form.html", b"<div>Run <tt>ls</tt>, press <button>Save</button> and go."
                                      b"<select><option>Lisbon</option></select></div>")
    assert form.text == "Run ls, press Save and go."  # inline tags do not break the line; form values are not text


def test_html_in_the_encoding_it_declares_is_read_as_such() -> None:
    page = '<html><head><meta charset="windows-1252"><title>Caf\u00e9 rules</title></head>' \
           '<body><p>The caf\u00e9 opens at 8 \u2013 bring your badge.</p></body></html>'
    [doc] = parse_bytes("cafe.htm", page.encode("windows-1252"))
    assert doc.title == "Caf\u00e9 rules" and "The caf\u00e9 opens at 8 \u2013 bring your badge." in doc.text
    # Saved by Word: it says latin-1 but writes windows-1252's curly quotes, as browsers expect
    word = '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"><p>\u201cBadges\u201d first</p>'
    [doc] = parse_bytes("word.htm", word.encode("windows-1252"))
    assert doc.text == "\u201cBadges\u201d first"


@pytest.mark.parametrize("name, data, message", [
    ("empty.md", b"  \n", "empty.md: the file is empty"),
    ("fake.pdf", b"\x00\x01binary junk", "fake.pdf: not a PDF file"),
    ("image.png", b"\x89PNG....", "unsupported file type '.png'"),
    ("notes", b"hello", "unsupported file type '(none)'"),
    ("latin1.txt", "caf\xe9".encode("latin-1"), "latin1.txt: not valid UTF-8"),
    ("latin1.html", "<p>caf\xe9</p>".encode("latin-1"), "latin1.html: not valid UTF-8"),   # declares nothing
])
def test_bad_files_get_a_message_naming_them(name: str, data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_bytes(name, data)


def test_jsonl_records_end_at_newlines_only_and_an_id_may_be_zero() -> None:
    from core.knowledge.parse import parse_jsonl

    data = ('{"_id": 0, "text": "Line one\u2028line two of the same answer."}\r\n'
            '{"_id": "q1", "text": "Windows-1252 text read as Latin-1: caf\u0085."}\n').encode()
    found = list(parse_jsonl("faq.jsonl", data, "faq.jsonl"))
    assert [type(d).__name__ for d in found] == ["ParsedDocument", "ParsedDocument"], found
    assert [d.source for d in found] == ["faq.jsonl#0", "faq.jsonl#q1"]   # type: ignore[union-attr]
    refused = list(parse_jsonl("faq.jsonl", b'{"_id": null, "text": "x"}\n{"_id": true, "text": "y"}\n', "faq.jsonl"))
    assert [str(e) for e in refused] == [f"faq.jsonl:{n}: a record needs a non-empty '_id' and 'text'" for n in (1, 2)]


def test_a_pdf_without_pages_is_named_as_such_not_as_one_needing_ocr() -> None:
    import io

    from pypdf import PdfWriter

    empty = io.BytesIO()
    PdfWriter().write(empty)
    with pytest.raises(ParseError, match="^empty.pdf: the PDF has no pages$"):
        parse_bytes("empty.pdf", empty.getvalue())
