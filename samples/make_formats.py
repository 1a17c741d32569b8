"""Build the sample handbook's HTML and PDF documents from Markdown in samples/sources/.

The handbook ships in three formats so that ingestion is exercised on each. Run from the repo
root: `.venv/bin/pip install fpdf2 && .venv/bin/python samples/make_formats.py` (fpdf2 is needed
only here, not by Flywheel)."""
from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent
SOURCES = ROOT / "sources"
HANDBOOK = ROOT / "handbook"
AS_HTML = ["hr/benefits", "hr/payroll", "office/facilities", "expenses/per-diems"]
AS_PDF = ["security/travel-security", "security/data-classification", "onboarding/buddy-programme"]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def to_html(name: str) -> None:
    text = (SOURCES / f"{name}.md").read_text()
    title = text.splitlines()[0].lstrip("# ").strip()
    body = MarkdownIt("commonmark").enable("table").render(text)
    page = (f"<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n"
            f"</head>\n<body>\n<nav>Northwind Robotics intranet</nav>\n<main>\n{body}</main>\n"
            f"<footer>Owned by People Operations. Last reviewed 2026.</footer>\n</body>\n</html>\n")
    (HANDBOOK / f"{name}.html").write_text(page)


def to_pdf(name: str) -> None:
    lines = (SOURCES / f"{name}.md").read_text().splitlines()
    pdf = FPDF()
    pdf.set_title(lines[0].lstrip("# ").strip())
    pdf.add_font("DejaVu", "", FONT)
    pdf.add_page()
    for line in lines:
        if line.startswith("# "):
            pdf.set_font("DejaVu", size=18)
            pdf.multi_cell(0, 10, line[2:], new_x="LMARGIN", new_y="NEXT")
        elif line.startswith("## "):
            pdf.set_font("DejaVu", size=14)
            pdf.ln(3)
            pdf.multi_cell(0, 8, line, new_x="LMARGIN", new_y="NEXT")  # keeps "## " so headings survive extraction
        else:
            pdf.set_font("DejaVu", size=11)
            pdf.multi_cell(0, 6, line.replace("**", "") or " ", new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(HANDBOOK / f"{name}.pdf"))


if __name__ == "__main__":
    for name in AS_HTML:
        to_html(name)
    for name in AS_PDF:
        to_pdf(name)
